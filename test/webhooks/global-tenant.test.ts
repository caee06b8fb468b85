/**
 * The global webhook endpoint never crosses tenants: the tenant is the one connected to the
 * event's Stripe account (`event.account`); customer metadata naming another tenant is refused
 * (create and delete alike), changing nothing. Signatures dated beyond the tolerance in the
 * future are refused too (stripe-node only checks their age).
 */
import { layer } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { expect } from "vitest"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { forEachBackend } from "../support/app.js"
import { ApiClient, newTenant, TestTenant } from "../support/TestApp.js"
import { API_KEY, configuredLayer, deliverSigned, Emulator, GLOBAL_SECRET, inTestTenant, rows, tenantWebhookPath, WEBHOOK_SECRET } from "./support.js"

const nowSec = () => Math.floor(Date.now() / 1000)

const event = (id: string, type: string, object: Record<string, unknown>, account?: string) =>
  JSON.stringify({
    id,
    object: "event",
    created: nowSec(),
    livemode: false,
    type,
    ...(account !== undefined ? { account } : {}),
    data: { object: { object: "customer", ...object } }
  })

/** A second tenant, connected to its own Stripe account acct_tenant_b. */
class TenantB extends Context.Tag("test/TenantB")<TenantB, Effect.Effect.Success<ReturnType<typeof newTenant>>>() {}

const withTenantB = Layer.effect(
  TenantB,
  Effect.gen(function* () {
    const other = yield* newTenant("b")
    const [, put] = yield* other.client.stripeConfig.putConfig({
      payload: { api_key: Redacted.make(API_KEY), webhook_secret: Redacted.make(WEBHOOK_SECRET) },
      withResponse: true
    })
    expect(put.status).toBe(200)
    yield* rows(`UPDATE stripe_tenant_configs SET stripe_account_id = 'acct_tenant_b', livemode = false WHERE tenant_id = '${other.scope.tenantId}'`)
    return other
  })
)

const signed = (path: string, payload: string, secret = GLOBAL_SECRET, t = nowSec()) => deliverSigned(path, payload, [secret], t)
/** The customers with `externalId` as the test tenant (A) or tenant B sees them. */
const customerIn = (externalId: string, tenant: "A" | "B" = "A") =>
  Effect.gen(function* () {
    const api = tenant === "A" ? yield* ApiClient : (yield* TenantB).client
    return (yield* api.customers.list({ urlParams: { external_id: externalId } })).customers
  })
const namingA = Effect.map(TestTenant, ({ scope }) => ({ flexprice_tenant_id: scope.tenantId, flexprice_environment_id: scope.environmentId }))

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(withTenantB.pipe(Layer.provideMerge(configuredLayer(backend))), { excludeTestServices: true })(`global webhook tenant resolution on ${backend}`, (it) => {
    it.effect("refuses a customer.created whose metadata names a tenant not connected to event.account", () =>
      Effect.gen(function* () {
        for (const account of ["acct_tenant_b", "acct_nobody"]) {
          const res = yield* signed(
            "/webhooks/stripe",
            event(`evt_cross_${account}`, "customer.created", { id: `cus_cross_${account}`, metadata: { external_id: "x-cross", ...(yield* namingA) } }, account)
          )
          expect([res.status, res.error?.code]).toEqual([400, "tenant_account_mismatch"])
        }
        expect(yield* customerIn("x-cross")).toEqual([])
        expect(yield* customerIn("x-cross", "B")).toEqual([])
        expect(yield* rows("SELECT count(*)::int AS n FROM webhook_events WHERE stripe_event_id LIKE 'evt_cross_%'")).toEqual([{ n: 0 }])
        // without metadata, acct_tenant_b's events go to tenant B, never to A
        const own = yield* signed("/webhooks/stripe", event("evt_b_own", "customer.created", { id: "cus_b_own", metadata: { external_id: "x-b-own" } }, "acct_tenant_b"))
        expect(own.status).toBe(200)
        expect(yield* customerIn("x-b-own", "B")).toHaveLength(1)
        expect(yield* customerIn("x-b-own")).toEqual([])
      })
    )

    it.effect("refuses a customer.deleted aimed at another tenant's mapping", () =>
      Effect.gen(function* () {
        const created = yield* signed(
          yield* tenantWebhookPath,
          event("evt_a_mapped", "customer.created", { id: "cus_a_mapped", metadata: { external_id: "x-a-mapped" } }),
          WEBHOOK_SECRET
        )
        expect(created.status).toBe(200)
        const mapping = inTestTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.findByProviderCustomerId("cus_a_mapped")))
        expect((yield* mapping)._tag).toBe("Some")
        const cross = yield* signed("/webhooks/stripe", event("evt_cross_del", "customer.deleted", { id: "cus_a_mapped", metadata: yield* namingA }, "acct_tenant_b"))
        expect([cross.status, cross.error?.code]).toEqual([400, "tenant_account_mismatch"])
        // with no metadata it acts in tenant B only, where cus_a_mapped maps to nothing
        const inB = yield* signed("/webhooks/stripe", event("evt_b_del", "customer.deleted", { id: "cus_a_mapped" }, "acct_tenant_b"))
        expect(inB.status).toBe(200)
        const noAccount = yield* signed("/webhooks/stripe", event("evt_noacct_del", "customer.deleted", { id: "cus_a_mapped", metadata: yield* namingA }))
        expect([noAccount.status, noAccount.error?.code]).toEqual([400, "tenant_not_found"])
        const m = yield* mapping
        expect(m._tag === "Some" && m.value.status).toBe("active")
      })
    )

    it.effect("accepts metadata naming the tenant connected to event.account", () =>
      Effect.gen(function* () {
        const { accountId } = yield* Emulator
        const res = yield* signed(
          "/webhooks/stripe",
          event("evt_a_ok", "customer.created", { id: "cus_a_ok", metadata: { external_id: "x-a-ok", ...(yield* namingA) } }, accountId)
        )
        expect(res.status).toBe(200)
        expect(yield* customerIn("x-a-ok")).toHaveLength(1)
      })
    )

    it.effect("refuses signatures dated more than the tolerance in the future; accepts clock skew within it", () =>
      Effect.gen(function* () {
        const path = yield* tenantWebhookPath
        const ahead = yield* signed(path, event("evt_future", "customer.created", { id: "cus_future", metadata: { external_id: "x-future" } }), WEBHOOK_SECRET, nowSec() + 3600)
        expect([ahead.status, ahead.error?.code]).toEqual([400, "webhook_timestamp_out_of_tolerance"])
        expect(yield* customerIn("x-future")).toEqual([])
        const skew = yield* signed(path, event("evt_skew", "customer.created", { id: "cus_skew", metadata: { external_id: "x-skew" } }), WEBHOOK_SECRET, nowSec() + 120)
        expect(skew.status).toBe(200)
      })
    )

    it.effect("refuses a customer it could not store as the API would (NUL, lone surrogate, over the field limits) with 400, recording nothing", () =>
      Effect.gen(function* () {
        const path = yield* tenantWebhookPath
        const cases: Array<[Record<string, unknown>, string]> = [
          [{ metadata: { external_id: "x-nul\u0000" } }, "metadata.external_id"],
          [{ metadata: { external_id: "x-lone\ud800" } }, "metadata.external_id"],
          [{ metadata: { external_id: "x".repeat(256) } }, "metadata.external_id"],
          [{ name: "n".repeat(501), metadata: { external_id: "x-long-name" } }, "name"],
          [{ email: "e\u0000@x.test", metadata: { external_id: "x-nul-email" } }, "email"]
        ]
        for (const [i, [object, field]] of cases.entries()) {
          // the escapes stay escapes in the JSON text, as Stripe would send them
          const payload = event(`evt_badfield_${i}`, "customer.created", { id: `cus_badfield_${i}`, ...object }).replace(/\\\\u/g, "\\u")
          const res = yield* signed(path, payload, WEBHOOK_SECRET)
          expect(res.status, field).toBe(400)
          expect(res.error?.code).toBe("invalid_customer_field")
          expect(res.error?.message).toContain(field)
        }
        expect(yield* rows("SELECT count(*)::int AS n FROM webhook_events WHERE stripe_event_id LIKE 'evt_badfield_%'")).toEqual([{ n: 0 }])
        expect(yield* customerIn("x-long-name")).toEqual([])
      })
    )
  })
})

/**
 * The global webhook endpoint never crosses tenants: the tenant is the one connected to the
 * event's Stripe account (`event.account`); customer metadata naming another tenant is refused
 * (create and delete alike), changing nothing. Signatures dated beyond the tolerance in the
 * future are refused too (stripe-node only checks their age).
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { signatureHeader } from "../../src/stripe-emulator/index.js"
import { forEachBackend, type Backend } from "../support/app.js"
import { API_KEY, configure, GLOBAL_SECRET, post, startHarness, WEBHOOK_SECRET, type Harness } from "./support.js"

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

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`global webhook tenant resolution on ${backend}`, () => {
    let h: Harness
    let other: { apiKey: string; scope: { tenantId: string; environmentId: string } }
    beforeAll(async () => {
      h = await startHarness(backend)
      await configure(h)
      // a second tenant, connected to its own Stripe account acct_tenant_b
      other = await h.app.newTenant("b")
      const put = await h.app.request("PUT", "/v1/stripe/config", { api_key: API_KEY, webhook_secret: WEBHOOK_SECRET }, { apiKey: other.apiKey })
      expect(put.status).toBe(200)
      await h.sql(`UPDATE stripe_tenant_configs SET stripe_account_id = 'acct_tenant_b', livemode = false WHERE tenant_id = '${other.scope.tenantId}'`)
    })
    afterAll(() => h?.close())

    const signed = (path: string, payload: string, secret = GLOBAL_SECRET, t = nowSec()) =>
      post(`${h.app.baseUrl}${path}`, payload, { "stripe-signature": signatureHeader(payload, [secret], t) })
    const customerIn = async (externalId: string, apiKey?: string) =>
      (await h.app.request("GET", `/v1/customers?external_id=${externalId}`, undefined, apiKey ? { apiKey } : {})).data.customers as Array<unknown>
    const namingA = () => ({ flexprice_tenant_id: h.app.scope.tenantId, flexprice_environment_id: h.app.scope.environmentId })

    it("refuses a customer.created whose metadata names a tenant not connected to event.account", async () => {
      for (const account of ["acct_tenant_b", "acct_nobody"]) {
        const res = await signed("/webhooks/stripe", event(`evt_cross_${account}`, "customer.created", { id: `cus_cross_${account}`, metadata: { external_id: "x-cross", ...namingA() } }, account))
        expect([res.status, res.error.code]).toEqual([400, "tenant_account_mismatch"])
      }
      expect(await customerIn("x-cross")).toEqual([])
      expect(await customerIn("x-cross", other.apiKey)).toEqual([])
      expect(await h.sql("SELECT count(*)::int AS n FROM webhook_events WHERE stripe_event_id LIKE 'evt_cross_%'")).toEqual([{ n: 0 }])
      // without metadata, acct_tenant_b's events go to tenant B, never to A
      const own = await signed("/webhooks/stripe", event("evt_b_own", "customer.created", { id: "cus_b_own", metadata: { external_id: "x-b-own" } }, "acct_tenant_b"))
      expect(own.status).toBe(200)
      expect(await customerIn("x-b-own", other.apiKey)).toHaveLength(1)
      expect(await customerIn("x-b-own")).toEqual([])
    })

    it("refuses a customer.deleted aimed at another tenant's mapping", async () => {
      const created = await signed(
        `/webhooks/stripe/${h.app.scope.tenantId}/${h.app.scope.environmentId}`,
        event("evt_a_mapped", "customer.created", { id: "cus_a_mapped", metadata: { external_id: "x-a-mapped" } }),
        WEBHOOK_SECRET
      )
      expect(created.status).toBe(200)
      const mapping = () => h.inTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.findByProviderCustomerId("cus_a_mapped")))
      expect((await mapping())._tag).toBe("Some")
      const cross = await signed("/webhooks/stripe", event("evt_cross_del", "customer.deleted", { id: "cus_a_mapped", metadata: namingA() }, "acct_tenant_b"))
      expect([cross.status, cross.error.code]).toEqual([400, "tenant_account_mismatch"])
      // with no metadata it acts in tenant B only, where cus_a_mapped maps to nothing
      const inB = await signed("/webhooks/stripe", event("evt_b_del", "customer.deleted", { id: "cus_a_mapped" }, "acct_tenant_b"))
      expect(inB.status).toBe(200)
      const noAccount = await signed("/webhooks/stripe", event("evt_noacct_del", "customer.deleted", { id: "cus_a_mapped", metadata: namingA() }))
      expect([noAccount.status, noAccount.error.code]).toEqual([400, "tenant_not_found"])
      const m = await mapping()
      expect(m._tag === "Some" && m.value.status).toBe("active")
    })

    it("accepts metadata naming the tenant connected to event.account", async () => {
      const res = await signed("/webhooks/stripe", event("evt_a_ok", "customer.created", { id: "cus_a_ok", metadata: { external_id: "x-a-ok", ...namingA() } }, h.emulator.accountId))
      expect(res.status).toBe(200)
      expect(await customerIn("x-a-ok")).toHaveLength(1)
    })

    it("refuses signatures dated more than the tolerance in the future; accepts clock skew within it", async () => {
      const path = `/webhooks/stripe/${h.app.scope.tenantId}/${h.app.scope.environmentId}`
      const ahead = await signed(path, event("evt_future", "customer.created", { id: "cus_future", metadata: { external_id: "x-future" } }), WEBHOOK_SECRET, nowSec() + 3600)
      expect([ahead.status, ahead.error.code]).toEqual([400, "webhook_timestamp_out_of_tolerance"])
      expect(await customerIn("x-future")).toEqual([])
      const skew = await signed(path, event("evt_skew", "customer.created", { id: "cus_skew", metadata: { external_id: "x-skew" } }), WEBHOOK_SECRET, nowSec() + 120)
      expect(skew.status).toBe(200)
    })

    it("refuses a customer it could not store as the API would (NUL, lone surrogate, over the field limits) with 400, recording nothing", async () => {
      const path = `/webhooks/stripe/${h.app.scope.tenantId}/${h.app.scope.environmentId}`
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
        const res = await signed(path, payload, WEBHOOK_SECRET)
        expect(res.status, field).toBe(400)
        expect(res.error.code).toBe("invalid_customer_field")
        expect(res.error.message).toContain(field)
      }
      expect(await h.sql("SELECT count(*)::int AS n FROM webhook_events WHERE stripe_event_id LIKE 'evt_badfield_%'")).toEqual([{ n: 0 }])
      expect(await customerIn("x-long-name")).toEqual([])
    })
  })
})

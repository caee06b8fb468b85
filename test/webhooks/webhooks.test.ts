/**
 * Webhooks end to end: the Stripe emulator signs and sends deliveries to the real HTTP server,
 * on PGlite and PostgreSQL. Rejections must change nothing; a processing failure must answer 500
 * and leave the event to a later redelivery. Deliveries the test sends itself go raw (their
 * bytes are what is signed); the API is read through its typed client.
 */
import { layer } from "@effect/vitest"
import { Effect, Either, Metric } from "effect"
import { expect } from "vitest"
import { WebhookAck } from "../../src/http/WebhooksApi.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { signatureHeader } from "../../src/stripe-emulator/index.js"
import { clientIp, parseCidrs } from "../../src/webhooks/WebhookConfig.js"
import { forEachBackend } from "../support/app.js"
import { ApiClient, TestTenant } from "../support/TestApp.js"
import {
  configuredLayer,
  deliver,
  deliverSigned,
  Emulator,
  GLOBAL_SECRET,
  inTestTenant,
  rows,
  tenantWebhookPath,
  WEBHOOK_SECRET
} from "./support.js"

const nowSec = () => Math.floor(Date.now() / 1000)

const customerEvent = (id: string, type: string, object: Record<string, unknown>) =>
  JSON.stringify({
    id,
    object: "event",
    api_version: "2019-01-01",
    created: nowSec(),
    livemode: false,
    type,
    data: { object: { object: "customer", ...object } },
    some_future_field: { nested: true }
  })

const mappingOf = (stripeCustomerId: string) => inTestTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.findByProviderCustomerId(stripeCustomerId)))
const activeMappings = (customerId: string) => inTestTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.activeByCustomerIds([customerId])))
const customerByExternal = (externalId: string) =>
  Effect.flatMap(ApiClient, (api) => Effect.map(api.customers.list({ urlParams: { external_id: externalId } }), (r) => r.customers))
const webhookEvents = (status: "processed" | "unmapped" | "conflict" | "failed") =>
  Effect.flatMap(ApiClient, (api) => Effect.map(api.stripeConfig.listWebhookEvents({ urlParams: { status } }), (r) => r.events))
const count = (table: string) => Effect.map(rows(`SELECT count(*)::int AS n FROM ${table}`), (r) => Number(r[0]!["n"]))

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(configuredLayer(backend), { excludeTestServices: true })(`Stripe webhooks on ${backend}`, (it) => {
    it.effect("customer.created with external_id creates the customer and its mapping, and processes its pending events", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const emulator = yield* Emulator
        const [, ingest] = yield* api.events.ingest({
          payload: { event_id: "pending-1", event_name: "api_call", external_customer_id: "wh-created", timestamp: new Date().toISOString(), properties: {} },
          withResponse: true
        })
        expect(ingest.status).toBe(202)
        const c = yield* emulator.createCustomer({ name: "Ada", email: "ada@example.com", metadata: { external_id: "wh-created" } })
        yield* emulator.deliveries.flush
        const delivery = emulator.deliveries.log().find((d) => d.type === "customer.created" && d.status !== null)
        expect(delivery?.status).toBe(200)
        const [customer] = yield* customerByExternal("wh-created")
        expect(customer).toMatchObject({ external_id: "wh-created", name: "Ada", email: "ada@example.com" })
        const mapping = yield* mappingOf(c.id)
        expect(mapping._tag).toBe("Some")
        expect(mapping._tag === "Some" && mapping.value).toMatchObject({ customerId: customer!.id, status: "active", source: "webhook" })
        const pending = yield* rows(`SELECT count(*)::int AS n FROM pending_events WHERE external_customer_id = 'wh-created'`)
        expect(pending[0]!["n"]).toBe(0)
        const events = yield* webhookEvents("processed")
        expect(events.some((e) => e.stripe_object_id === c.id && e.type === "customer.created")).toBe(true)
      })
    )

    it.effect("a duplicate delivery answers 200 and leaves one mapping", () =>
      Effect.gen(function* () {
        const emulator = yield* Emulator
        emulator.deliveries.duplicateNext(1, 1)
        const c = yield* emulator.createCustomer({ metadata: { external_id: "wh-dup" } })
        yield* emulator.deliveries.flush
        const sends = emulator.deliveries.log().filter((d) => d.type === "customer.created" && d.attempt >= 1)
        const forThis = sends.slice(-2)
        expect(forThis.map((d) => d.status)).toEqual([200, 200])
        expect(forThis[0]!.eventId).toBe(forThis[1]!.eventId)
        const mappings = yield* rows(`SELECT count(*)::int AS n FROM customer_integration_mappings WHERE provider_customer_id = '${c.id}'`)
        expect(mappings[0]!["n"]).toBe(1)
        expect(yield* customerByExternal("wh-dup")).toHaveLength(1)
        const ev = yield* rows(`SELECT status FROM webhook_events WHERE stripe_event_id = '${forThis[0]!.eventId}'`)
        expect(ev).toEqual([{ status: "processed" }])
      })
    )

    it.effect("customer.updated delivered before customer.created ends in the same state", () =>
      Effect.gen(function* () {
        const emulator = yield* Emulator
        emulator.deliveries.hold()
        const c = yield* emulator.createCustomer({ name: "Old", metadata: { external_id: "wh-order" } })
        yield* emulator.updateCustomer(c.id, { name: "New" })
        const records = yield* emulator.deliveries.release("reverse")
        expect(records.map((r) => [r.type, r.status])).toEqual([
          ["customer.updated", 200],
          ["customer.created", 200]
        ])
        const customers = yield* customerByExternal("wh-order")
        expect(customers).toHaveLength(1)
        expect(customers[0]!.name).toBe("New")
        const mapping = yield* mappingOf(c.id)
        expect(mapping._tag === "Some" && mapping.value.customerId).toBe(customers[0]!.id)
        // the same update twice changes nothing
        const again = yield* emulator.deliveries.redeliver(records[0]!.eventId)
        expect(again.status).toBe(200)
        expect(yield* customerByExternal("wh-order")).toHaveLength(1)
      })
    )

    it.effect("no external_id → unmapped; a Stripe customer for an already mapped external_id → conflict, never overwritten", () =>
      Effect.gen(function* () {
        const emulator = yield* Emulator
        const u = yield* emulator.createCustomer({ name: "No id" })
        const a = yield* emulator.createCustomer({ metadata: { external_id: "wh-conflict" } })
        // Stripe delivers webhooks concurrently and in no order; a must be mapped before b arrives
        yield* emulator.deliveries.flush
        const b = yield* emulator.createCustomer({ metadata: { external_id: "wh-conflict" } })
        yield* emulator.deliveries.flush
        const unmapped = yield* webhookEvents("unmapped")
        expect(unmapped.map((e) => e.stripe_object_id)).toContain(u.id)
        expect((yield* mappingOf(u.id))._tag).toBe("None")
        const conflicts = yield* webhookEvents("conflict")
        const row = conflicts.find((e) => e.stripe_object_id === b.id)
        expect(row?.details).toMatchObject({ conflict_with: { stripe_customer_id: a.id } })
        const ma = yield* mappingOf(a.id)
        expect(ma._tag === "Some" && ma.value.status).toBe("active")
        expect((yield* mappingOf(b.id))._tag).toBe("None")
      })
    )

    it.effect("customer.deleted marks the mapping deleted, so its usage stops syncing; other types are ignored", () =>
      Effect.gen(function* () {
        const emulator = yield* Emulator
        const c = yield* emulator.createCustomer({ metadata: { external_id: "wh-deleted" } })
        yield* emulator.deliveries.flush
        const [customer] = yield* customerByExternal("wh-deleted")
        const active = yield* activeMappings(customer!.id)
        expect(active.get(customer!.id)).toBe(c.id)
        yield* emulator.deleteCustomer(c.id)
        yield* emulator.deliveries.flush
        const m = yield* mappingOf(c.id)
        expect(m._tag === "Some" && m.value.status).toBe("deleted")
        const after = yield* activeMappings(customer!.id)
        expect(after.size).toBe(0)
        const ev = yield* emulator.emitEvent("invoice.paid", { id: "in_123", object: "invoice" })
        yield* emulator.deliveries.flush
        const stored = yield* rows(`SELECT status FROM webhook_events WHERE stripe_event_id = '${ev.id}'`)
        expect(stored).toEqual([{ status: "ignored" }])
      })
    )

    it.effect("accepts a header with several v1 signatures when one matches (secret rotation)", () =>
      Effect.gen(function* () {
        const payload = customerEvent("evt_multi_sig", "customer.created", { id: "cus_multi", metadata: { external_id: "wh-multi" } })
        const res = yield* deliverSigned(yield* tenantWebhookPath, payload, ["whsec_previous_secret_000", WEBHOOK_SECRET])
        expect(res.status).toBe(200)
        expect(res.as(WebhookAck)).toEqual({ received: true, event_id: "evt_multi_sig", status: "processed" })
      })
    )

    it.effect("rejects bad signature, stale timestamp, oversized body, malformed JSON and unknown tenants with 4xx, changing nothing", () =>
      Effect.gen(function* () {
        const emulator = yield* Emulator
        const path = yield* tenantWebhookPath
        yield* emulator.deliveries.flush
        const before = { webhooks: yield* count("webhook_events"), customers: yield* count("customers") }
        const failures = (reason: string) => Effect.map(Metric.value(Metric.tagged(Metrics.webhookSignatureFailuresTotal, "reason", reason)), (s) => s.count)
        const sigBefore = yield* failures("signature")
        const tsBefore = yield* failures("timestamp")
        const payload = customerEvent("evt_rejected", "customer.created", { id: "cus_rejected", metadata: { external_id: "wh-rejected" } })
        const refused = (answer: { readonly status: number; readonly error: { readonly code: string } | undefined }) => [answer.status, answer.error?.code]

        expect(refused(yield* deliverSigned(path, payload, ["whsec_not_the_secret"]))).toEqual([400, "invalid_signature"])
        expect(refused(yield* deliver(path, payload))).toEqual([400, "invalid_signature"])
        expect(refused(yield* deliverSigned(path, payload, [WEBHOOK_SECRET], nowSec() - 301))).toEqual([400, "webhook_timestamp_out_of_tolerance"])
        const big = JSON.stringify({ id: "evt_big", type: "customer.created", data: { object: { id: "cus_big", pad: "x".repeat(600 * 1024) } } })
        expect(refused(yield* deliverSigned(path, big, [WEBHOOK_SECRET]))).toEqual([413, "payload_too_large"])
        expect(refused(yield* deliverSigned(path, "{not json", [WEBHOOK_SECRET]))).toEqual([400, "malformed_json"])
        expect(refused(yield* deliverSigned(path, JSON.stringify({ hello: "world" }), [WEBHOOK_SECRET]))).toEqual([400, "invalid_event"])
        expect(refused(yield* deliverSigned(`/webhooks/stripe/tnt_doesnotexist/env_doesnotexist`, payload, [WEBHOOK_SECRET]))).toEqual([400, "tenant_not_found"])
        const globalUnknown = yield* deliverSigned(
          "/webhooks/stripe",
          customerEvent("evt_global_unknown", "customer.created", {
            id: "cus_gu",
            metadata: { external_id: "x", flexprice_tenant_id: "tnt_nope", flexprice_environment_id: "env_nope" }
          }),
          [GLOBAL_SECRET]
        )
        expect(refused(globalUnknown)).toEqual([400, "tenant_not_found"])
        expect(refused(yield* deliverSigned("/webhooks/stripe", payload, [GLOBAL_SECRET]))).toEqual([400, "tenant_not_found"])

        expect({ webhooks: yield* count("webhook_events"), customers: yield* count("customers") }).toEqual(before)
        expect((yield* failures("signature")) - sigBefore).toBeGreaterThanOrEqual(2)
        expect((yield* failures("timestamp")) - tsBefore).toBeGreaterThanOrEqual(1)
        expect(yield* customerByExternal("wh-rejected")).toHaveLength(0)
      })
    )

    it.effect("the global endpoint finds the tenant from the connected Stripe account; metadata may only name that tenant", () =>
      Effect.gen(function* () {
        const { scope } = yield* TestTenant
        const emulator = yield* Emulator
        const metaOnly = customerEvent("evt_global_meta", "customer.created", {
          id: "cus_global_meta",
          metadata: { external_id: "wh-global-meta", flexprice_tenant_id: scope.tenantId, flexprice_environment_id: scope.environmentId }
        })
        // metadata alone is written by whoever owns the Stripe account: it proves nothing
        const r0 = yield* deliverSigned("/webhooks/stripe", metaOnly, [GLOBAL_SECRET])
        expect([r0.status, r0.error?.code]).toEqual([400, "tenant_not_found"])
        const byMeta = JSON.stringify({ ...(JSON.parse(metaOnly) as object), account: emulator.accountId })
        const r1 = yield* deliverSigned("/webhooks/stripe", byMeta, [GLOBAL_SECRET])
        expect(r1.status).toBe(200)
        expect(yield* customerByExternal("wh-global-meta")).toHaveLength(1)
        const byAccount = JSON.stringify({
          ...(JSON.parse(customerEvent("evt_global_acct", "customer.created", { id: "cus_global_acct", metadata: { external_id: "wh-global-acct" } })) as object),
          account: emulator.accountId
        })
        const r2 = yield* deliverSigned("/webhooks/stripe", byAccount, [GLOBAL_SECRET])
        expect(r2.status).toBe(200)
        expect(yield* customerByExternal("wh-global-acct")).toHaveLength(1)
        // the tenant secret does not open the global endpoint
        const wrong = yield* deliverSigned("/webhooks/stripe", byMeta, [WEBHOOK_SECRET])
        expect([wrong.status, wrong.error?.code]).toEqual([400, "invalid_signature"])
      })
    )

    it.effect("a database failure answers 500 and records the error; the redelivery then succeeds", () =>
      Effect.gen(function* () {
        const emulator = yield* Emulator
        yield* emulator.deliveries.flush
        const eventId = yield* Effect.acquireUseRelease(
          rows("ALTER TABLE customer_integration_mappings RENAME TO customer_integration_mappings_away"),
          () =>
            Effect.gen(function* () {
              yield* emulator.createCustomer({ metadata: { external_id: "wh-dbfail" } })
              yield* emulator.deliveries.flush
              const d = emulator.deliveries.log().filter((x) => x.type === "customer.created").at(-1)!
              expect(d.status).toBe(500)
              const row = yield* rows(`SELECT status, error FROM webhook_events WHERE stripe_event_id = '${d.eventId}'`)
              expect(row[0]!["status"]).toBe("failed")
              expect(String(row[0]!["error"])).toMatch(/customer_integration_mappings/)
              const failed = yield* webhookEvents("failed")
              expect(failed.map((e) => e.stripe_event_id)).toContain(d.eventId)
              return d.eventId
            }),
          () => Effect.orDie(rows("ALTER TABLE customer_integration_mappings_away RENAME TO customer_integration_mappings"))
        )
        const again = yield* emulator.deliveries.redeliver(eventId)
        expect(again.status).toBe(200)
        const row = yield* rows(`SELECT status, error FROM webhook_events WHERE stripe_event_id = '${eventId}'`)
        expect(row).toEqual([{ status: "processed", error: null }])
        const [customer] = yield* customerByExternal("wh-dbfail")
        const mapped = yield* activeMappings(customer!.id)
        expect(mapped.size).toBe(1)
      })
    )
  })
})

layer(configuredLayer("pglite", { STRIPE_WEBHOOK_ALLOWED_IPS: "3.18.12.63/32", FLEXPRICE_TRUSTED_PROXIES: "127.0.0.1/32" }), { excludeTestServices: true })(
  "webhook source address allowlist",
  (it) => {
    it("parses CIDRs and walks X-Forwarded-For only from trusted proxies", () => {
      const trusted = Either.getOrThrow(parseCidrs("127.0.0.1/32, ::1"))
      expect(clientIp("::ffff:127.0.0.1", "3.18.12.63, 10.0.0.9", Either.getOrThrow(parseCidrs("127.0.0.0/8,10.0.0.0/8")))).toBe("3.18.12.63")
      expect(clientIp("127.0.0.1", "3.18.12.63", trusted)).toBe("3.18.12.63")
      expect(clientIp("192.0.2.7", "3.18.12.63", trusted)).toBe("192.0.2.7")
      expect(Either.isLeft(parseCidrs("10.0.0.0/33"))).toBe(true)
      expect(Either.isLeft(parseCidrs("not-an-ip"))).toBe(true)
    })

    it.effect("answers 403 to deliveries from outside STRIPE_WEBHOOK_ALLOWED_IPS, and accepts allowed ones via a trusted proxy", () =>
      Effect.gen(function* () {
        const path = yield* tenantWebhookPath
        const payload = customerEvent("evt_ip", "customer.created", { id: "cus_ip", metadata: { external_id: "ip-1" } })
        const sig = { "stripe-signature": signatureHeader(payload, [WEBHOOK_SECRET], nowSec()) }
        const direct = yield* deliver(path, payload, sig)
        expect([direct.status, direct.error?.code]).toEqual([403, "ip_not_allowed"])
        const spoofed = yield* deliver(path, payload, { ...sig, "x-forwarded-for": "3.18.12.63, 198.51.100.4" })
        expect([spoofed.status, spoofed.error?.code]).toEqual([403, "ip_not_allowed"])
        const viaProxy = yield* deliver(path, payload, { ...sig, "x-forwarded-for": "3.18.12.63" })
        expect(viaProxy.status).toBe(200)
      })
    )
  }
)

/**
 * Webhooks end to end: the Stripe emulator signs and sends deliveries to the real HTTP server,
 * on PGlite and PostgreSQL. Rejections must change nothing; a processing failure must answer 500
 * and leave the event to a later redelivery.
 */
import { Effect, Metric } from "effect"
import * as Metrics from "../../src/observability/Metrics.js"
import { clientIp, parseCidrs } from "../../src/webhooks/WebhookConfig.js"
import { Either } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { signatureHeader } from "../../src/stripe-emulator/index.js"
import { forEachBackend, type Backend } from "../support/app.js"
import { configure, GLOBAL_SECRET, post, startHarness, WEBHOOK_SECRET, type Harness } from "./support.js"

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

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`Stripe webhooks on ${backend}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend)
      await configure(h)
    })
    afterAll(async () => {
      await h?.close()
    })

    const mappingOf = (stripeCustomerId: string) =>
      h.inTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.findByProviderCustomerId(stripeCustomerId)))
    const customerByExternal = async (externalId: string) =>
      (await h.app.request("GET", `/v1/customers?external_id=${encodeURIComponent(externalId)}`)).data.customers
    const webhookRows = async () => Number((await h.sql("SELECT count(*)::int AS n FROM webhook_events"))[0]!["n"])
    const customerRows = async () => Number((await h.sql("SELECT count(*)::int AS n FROM customers"))[0]!["n"])
    const signedPost = (path: string, payload: string, secrets: ReadonlyArray<string> = [WEBHOOK_SECRET], t = nowSec()) =>
      post(`${h.app.baseUrl}${path}`, payload, { "stripe-signature": signatureHeader(payload, secrets, t) })

    it("customer.created with external_id creates the customer and its mapping, and processes its pending events", async () => {
      const ingest = await h.app.request("POST", "/v1/events", {
        event_id: "pending-1",
        event_name: "api_call",
        external_customer_id: "wh-created",
        timestamp: new Date().toISOString(),
        properties: {}
      })
      expect(ingest.status).toBe(202)
      const c = await Effect.runPromise(h.emulator.createCustomer({ name: "Ada", email: "ada@example.com", metadata: { external_id: "wh-created" } }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const delivery = h.emulator.deliveries.log().find((d) => d.type === "customer.created" && d.status !== null)
      expect(delivery?.status).toBe(200)
      const [customer] = await customerByExternal("wh-created")
      expect(customer).toMatchObject({ external_id: "wh-created", name: "Ada", email: "ada@example.com" })
      const mapping = await mappingOf(c.id)
      expect(mapping._tag).toBe("Some")
      expect(mapping._tag === "Some" && mapping.value).toMatchObject({ customerId: customer.id, status: "active", source: "webhook" })
      const pending = await h.sql(`SELECT count(*)::int AS n FROM pending_events WHERE external_customer_id = 'wh-created'`)
      expect(pending[0]!["n"]).toBe(0)
      const events = await h.app.request("GET", "/v1/stripe/webhook-events?status=processed")
      expect(events.data.events.some((e) => e.stripe_object_id === c.id && e.type === "customer.created")).toBe(true)
    })

    it("a duplicate delivery answers 200 and leaves one mapping", async () => {
      h.emulator.deliveries.duplicateNext(1, 1)
      const c = await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "wh-dup" } }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const sends = h.emulator.deliveries.log().filter((d) => d.type === "customer.created" && d.attempt >= 1)
      const forThis = sends.slice(-2)
      expect(forThis.map((d) => d.status)).toEqual([200, 200])
      expect(forThis[0]!.eventId).toBe(forThis[1]!.eventId)
      const rows = await h.sql(`SELECT count(*)::int AS n FROM customer_integration_mappings WHERE provider_customer_id = '${c.id}'`)
      expect(rows[0]!["n"]).toBe(1)
      expect(await customerByExternal("wh-dup")).toHaveLength(1)
      const ev = await h.sql(`SELECT status FROM webhook_events WHERE stripe_event_id = '${forThis[0]!.eventId}'`)
      expect(ev).toEqual([{ status: "processed" }])
    })

    it("customer.updated delivered before customer.created ends in the same state", async () => {
      h.emulator.deliveries.hold()
      const c = await Effect.runPromise(h.emulator.createCustomer({ name: "Old", metadata: { external_id: "wh-order" } }))
      await Effect.runPromise(h.emulator.updateCustomer(c.id, { name: "New" }))
      const records = await Effect.runPromise(h.emulator.deliveries.release("reverse"))
      expect(records.map((r) => [r.type, r.status])).toEqual([
        ["customer.updated", 200],
        ["customer.created", 200]
      ])
      const customers = await customerByExternal("wh-order")
      expect(customers).toHaveLength(1)
      expect(customers[0].name).toBe("New")
      const mapping = await mappingOf(c.id)
      expect(mapping._tag === "Some" && mapping.value.customerId).toBe(customers[0].id)
      // the same update twice changes nothing
      const again = await Effect.runPromise(h.emulator.deliveries.redeliver(records[0]!.eventId))
      expect(again.status).toBe(200)
      expect(await customerByExternal("wh-order")).toHaveLength(1)
    })

    it("no external_id → unmapped; a Stripe customer for an already mapped external_id → conflict, never overwritten", async () => {
      const u = await Effect.runPromise(h.emulator.createCustomer({ name: "No id" }))
      const a = await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "wh-conflict" } }))
      // Stripe delivers webhooks concurrently and in no order; a must be mapped before b arrives
      await Effect.runPromise(h.emulator.deliveries.flush)
      const b = await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "wh-conflict" } }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const unmapped = await h.app.request("GET", "/v1/stripe/webhook-events?status=unmapped")
      expect(unmapped.data.events.map((e) => e.stripe_object_id)).toContain(u.id)
      expect((await mappingOf(u.id))._tag).toBe("None")
      const conflicts = await h.app.request("GET", "/v1/stripe/webhook-events?status=conflict")
      const row = conflicts.data.events.find((e) => e.stripe_object_id === b.id)
      expect(row?.details).toMatchObject({ conflict_with: { stripe_customer_id: a.id } })
      const ma = await mappingOf(a.id)
      expect(ma._tag === "Some" && ma.value.status).toBe("active")
      expect((await mappingOf(b.id))._tag).toBe("None")
    })

    it("customer.deleted marks the mapping deleted, so its usage stops syncing; other types are ignored", async () => {
      const c = await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "wh-deleted" } }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const [customer] = await customerByExternal("wh-deleted")
      const active = await h.inTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.activeByCustomerIds([customer.id])))
      expect(active.get(customer.id)).toBe(c.id)
      await Effect.runPromise(h.emulator.deleteCustomer(c.id))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const m = await mappingOf(c.id)
      expect(m._tag === "Some" && m.value.status).toBe("deleted")
      const after = await h.inTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.activeByCustomerIds([customer.id])))
      expect(after.size).toBe(0)
      const ev = await Effect.runPromise(h.emulator.emitEvent("invoice.paid", { id: "in_123", object: "invoice" }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const rows = await h.sql(`SELECT status FROM webhook_events WHERE stripe_event_id = '${ev.id}'`)
      expect(rows).toEqual([{ status: "ignored" }])
    })

    it("accepts a header with several v1 signatures when one matches (secret rotation)", async () => {
      const payload = customerEvent("evt_multi_sig", "customer.created", { id: "cus_multi", metadata: { external_id: "wh-multi" } })
      const res = await signedPost(h.webhookPath, payload, ["whsec_previous_secret_000", WEBHOOK_SECRET])
      expect(res.status).toBe(200)
      expect(res.body).toEqual({ received: true, event_id: "evt_multi_sig", status: "processed" })
    })

    it("rejects bad signature, stale timestamp, oversized body, malformed JSON and unknown tenants with 4xx, changing nothing", async () => {
      await Effect.runPromise(h.emulator.deliveries.flush)
      const before = { webhooks: await webhookRows(), customers: await customerRows() }
      const failures = (reason: string) =>
        Effect.runPromise(Metric.value(Metric.tagged(Metrics.webhookSignatureFailuresTotal, "reason", reason))).then((s) => s.count)
      const sigBefore = await failures("signature")
      const tsBefore = await failures("timestamp")
      const payload = customerEvent("evt_rejected", "customer.created", { id: "cus_rejected", metadata: { external_id: "wh-rejected" } })

      const bad = await signedPost(h.webhookPath, payload, ["whsec_not_the_secret"])
      expect([bad.status, bad.error.code]).toEqual([400, "invalid_signature"])
      const missing = await post(`${h.app.baseUrl}${h.webhookPath}`, payload)
      expect([missing.status, missing.error.code]).toEqual([400, "invalid_signature"])
      const stale = await signedPost(h.webhookPath, payload, [WEBHOOK_SECRET], nowSec() - 301)
      expect([stale.status, stale.error.code]).toEqual([400, "webhook_timestamp_out_of_tolerance"])
      const big = JSON.stringify({ id: "evt_big", type: "customer.created", data: { object: { id: "cus_big", pad: "x".repeat(600 * 1024) } } })
      const tooLarge = await signedPost(h.webhookPath, big)
      expect([tooLarge.status, tooLarge.error.code]).toEqual([413, "payload_too_large"])
      const malformed = await signedPost(h.webhookPath, "{not json")
      expect([malformed.status, malformed.error.code]).toEqual([400, "malformed_json"])
      const notEvent = await signedPost(h.webhookPath, JSON.stringify({ hello: "world" }))
      expect([notEvent.status, notEvent.error.code]).toEqual([400, "invalid_event"])
      const unknown = await signedPost(`/webhooks/stripe/tnt_doesnotexist/env_doesnotexist`, payload)
      expect([unknown.status, unknown.error.code]).toEqual([400, "tenant_not_found"])
      const globalUnknown = await signedPost(
        "/webhooks/stripe",
        customerEvent("evt_global_unknown", "customer.created", {
          id: "cus_gu",
          metadata: { external_id: "x", flexprice_tenant_id: "tnt_nope", flexprice_environment_id: "env_nope" }
        }),
        [GLOBAL_SECRET]
      )
      expect([globalUnknown.status, globalUnknown.error.code]).toEqual([400, "tenant_not_found"])
      const globalNoTenant = await signedPost("/webhooks/stripe", payload, [GLOBAL_SECRET])
      expect([globalNoTenant.status, globalNoTenant.error.code]).toEqual([400, "tenant_not_found"])

      expect({ webhooks: await webhookRows(), customers: await customerRows() }).toEqual(before)
      expect((await failures("signature")) - sigBefore).toBeGreaterThanOrEqual(2)
      expect((await failures("timestamp")) - tsBefore).toBeGreaterThanOrEqual(1)
      expect(await customerByExternal("wh-rejected")).toHaveLength(0)
    })

    it("the global endpoint finds the tenant from the connected Stripe account; metadata may only name that tenant", async () => {
      const metaOnly = customerEvent("evt_global_meta", "customer.created", {
        id: "cus_global_meta",
        metadata: { external_id: "wh-global-meta", flexprice_tenant_id: h.app.scope.tenantId, flexprice_environment_id: h.app.scope.environmentId }
      })
      // metadata alone is written by whoever owns the Stripe account: it proves nothing
      const r0 = await signedPost("/webhooks/stripe", metaOnly, [GLOBAL_SECRET])
      expect([r0.status, r0.error.code]).toEqual([400, "tenant_not_found"])
      const byMeta = JSON.stringify({ ...JSON.parse(metaOnly), account: h.emulator.accountId })
      const r1 = await signedPost("/webhooks/stripe", byMeta, [GLOBAL_SECRET])
      expect(r1.status).toBe(200)
      expect(await customerByExternal("wh-global-meta")).toHaveLength(1)
      const byAccount = JSON.stringify({
        ...JSON.parse(customerEvent("evt_global_acct", "customer.created", { id: "cus_global_acct", metadata: { external_id: "wh-global-acct" } })),
        account: h.emulator.accountId
      })
      const r2 = await signedPost("/webhooks/stripe", byAccount, [GLOBAL_SECRET])
      expect(r2.status).toBe(200)
      expect(await customerByExternal("wh-global-acct")).toHaveLength(1)
      // the tenant secret does not open the global endpoint
      const wrong = await signedPost("/webhooks/stripe", byMeta, [WEBHOOK_SECRET])
      expect(wrong.status).toBe(400)
    })

    it("a database failure answers 500 and records the error; the redelivery then succeeds", async () => {
      await Effect.runPromise(h.emulator.deliveries.flush)
      await h.sql("ALTER TABLE customer_integration_mappings RENAME TO customer_integration_mappings_away")
      let eventId: string
      try {
        const c = await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "wh-dbfail" } }))
        await Effect.runPromise(h.emulator.deliveries.flush)
        const d = h.emulator.deliveries.log().filter((x) => x.type === "customer.created").at(-1)!
        eventId = d.eventId
        expect(d.status).toBe(500)
        const row = await h.sql(`SELECT status, error FROM webhook_events WHERE stripe_event_id = '${eventId}'`)
        expect(row[0]!["status"]).toBe("failed")
        expect(String(row[0]!["error"])).toMatch(/customer_integration_mappings/)
        const failed = await h.app.request("GET", "/v1/stripe/webhook-events?status=failed")
        expect(failed.data.events.map((e) => e.stripe_event_id)).toContain(eventId)
        void c
      } finally {
        await h.sql("ALTER TABLE customer_integration_mappings_away RENAME TO customer_integration_mappings")
      }
      const again = await Effect.runPromise(h.emulator.deliveries.redeliver(eventId))
      expect(again.status).toBe(200)
      const row = await h.sql(`SELECT status, error FROM webhook_events WHERE stripe_event_id = '${eventId}'`)
      expect(row).toEqual([{ status: "processed", error: null }])
      const [customer] = await customerByExternal("wh-dbfail")
      const mapped = await h.inTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.activeByCustomerIds([customer.id])))
      expect(mapped.size).toBe(1)
    })
  })
})

describe("webhook source address allowlist", () => {
  it("parses CIDRs and walks X-Forwarded-For only from trusted proxies", () => {
    const trusted = Either.getOrThrow(parseCidrs("127.0.0.1/32, ::1"))
    expect(clientIp("::ffff:127.0.0.1", "3.18.12.63, 10.0.0.9", Either.getOrThrow(parseCidrs("127.0.0.0/8,10.0.0.0/8")))).toBe("3.18.12.63")
    expect(clientIp("127.0.0.1", "3.18.12.63", trusted)).toBe("3.18.12.63")
    expect(clientIp("192.0.2.7", "3.18.12.63", trusted)).toBe("192.0.2.7")
    expect(Either.isLeft(parseCidrs("10.0.0.0/33"))).toBe(true)
    expect(Either.isLeft(parseCidrs("not-an-ip"))).toBe(true)
  })

  it("answers 403 to deliveries from outside STRIPE_WEBHOOK_ALLOWED_IPS, and accepts allowed ones via a trusted proxy", async () => {
    const h = await startHarness("pglite", { STRIPE_WEBHOOK_ALLOWED_IPS: "3.18.12.63/32", FLEXPRICE_TRUSTED_PROXIES: "127.0.0.1/32" })
    try {
      await configure(h)
      const payload = customerEvent("evt_ip", "customer.created", { id: "cus_ip", metadata: { external_id: "ip-1" } })
      const sig = { "stripe-signature": signatureHeader(payload, [WEBHOOK_SECRET], nowSec()) }
      const direct = await post(`${h.app.baseUrl}${h.webhookPath}`, payload, sig)
      expect([direct.status, direct.error.code]).toEqual([403, "ip_not_allowed"])
      const spoofed = await post(`${h.app.baseUrl}${h.webhookPath}`, payload, { ...sig, "x-forwarded-for": "3.18.12.63, 198.51.100.4" })
      expect(spoofed.status).toBe(403)
      const viaProxy = await post(`${h.app.baseUrl}${h.webhookPath}`, payload, { ...sig, "x-forwarded-for": "3.18.12.63" })
      expect(viaProxy.status).toBe(200)
    } finally {
      await h.close()
    }
  })
})

/**
 * Core API over HTTP on every relational backend: tenant isolation, customers, meters, events
 * (exact decimals, idempotency, pending customers, bulk validation), error envelope.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as O from "../support/oracle.js"
import { forEachBackend, startTestApp, type Backend, type TestApp } from "../support/app.js"

const hourAgo = () => {
  const d = new Date(Date.now() - 2 * 3600_000)
  d.setUTCMinutes(0, 0, 0)
  return d
}

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`core API on ${backend}`, () => {
    let app: TestApp
    beforeAll(async () => {
      app = await startTestApp({ backend })
    })
    afterAll(async () => {
      await app?.dispose()
    })

    it("rejects requests without or with a wrong API key with the error envelope", async () => {
      const missing = await app.request("GET", "/v1/customers", undefined, { apiKey: "" })
      expect(missing.status).toBe(401)
      expect(missing.body).toEqual({ error: { code: "missing_api_key", message: expect.any(String) } })
      const wrong = await app.request("GET", "/v1/customers", undefined, { apiKey: "fp_nope" })
      expect(wrong.status).toBe(401)
      expect(wrong.error.code).toBe("invalid_api_key")
    })

    it("creates, reads, updates and deletes customers; duplicate external_id is 409", async () => {
      const created = await app.request("POST", "/v1/customers", { external_id: "crud-1", name: "A", metadata: { plan: "pro", billing_tier: "gold" } })
      expect(created.status).toBe(201)
      expect(created.data.id).toMatch(/^cust_/)
      const dup = await app.request("POST", "/v1/customers", { external_id: "crud-1" })
      expect(dup.status).toBe(409)
      expect(dup.error.code).toBe("customer_exists")
      const byExt = await app.request("GET", "/v1/customers?external_id=crud-1")
      expect(byExt.data.customers.map((c) => c.id)).toEqual([created.data.id])
      const updated = await app.request("PUT", `/v1/customers/${created.data.id}`, { email: "a@example.com" })
      // metadata keys come back exactly as sent (no snake_case → camelCase rewriting inside JSON)
      expect(updated.body).toMatchObject({ name: "A", email: "a@example.com", metadata: { plan: "pro", billing_tier: "gold" } })
      const del = await app.request("DELETE", `/v1/customers/${created.data.id}`)
      expect(del.body).toEqual({ id: created.data.id, deleted: true })
      const gone = await app.request("GET", `/v1/customers/${created.data.id}`)
      expect(gone.status).toBe(404)
      expect(gone.error.code).toBe("customer_not_found")
    })

    it("keeps tenants apart: another tenant sees none of this tenant's data", async () => {
      const other = await app.newTenant("other")
      const mine = await app.request("POST", "/v1/customers", { external_id: "iso-1" })
      const meter = await app.request("POST", "/v1/meters", { name: "m", event_name: "iso", aggregation: { type: "COUNT" } })
      await app.request("POST", "/v1/events", { event_id: "iso-e1", event_name: "iso", external_customer_id: "iso-1" })
      const opts = { apiKey: other.apiKey }
      expect((await app.request("GET", `/v1/customers/${mine.data.id}`, undefined, opts)).status).toBe(404)
      expect((await app.request("GET", "/v1/customers?external_id=iso-1", undefined, opts)).data.customers).toEqual([])
      expect((await app.request("GET", `/v1/meters/${meter.data.id}`, undefined, opts)).status).toBe(404)
      expect((await app.request("GET", "/v1/events?external_customer_id=iso-1", undefined, opts)).data.events).toEqual([])
      expect((await app.request("DELETE", `/v1/customers/${mine.data.id}`, undefined, opts)).status).toBe(404)
      // the same external id is free in the other tenant
      expect((await app.request("POST", "/v1/customers", { external_id: "iso-1" }, opts)).status).toBe(201)
      expect((await app.request("GET", `/v1/customers/${mine.data.id}`)).status).toBe(200)
    })

    it("validates meters", async () => {
      const bad = await app.request("POST", "/v1/meters", { name: "x", event_name: "x", aggregation: { type: "SUM" } })
      expect(bad.status).toBe(400)
      expect(bad.error.code).toBe("invalid_request")
      const wrongType = await app.request("POST", "/v1/meters", { name: "x", event_name: "x", aggregation: { type: "AVG" } })
      expect(wrongType.status).toBe(400)
    })

    it("sums 10,000 events of 0.1 to exactly 1000 and counts a re-sent event_id once", async () => {
      const meter = await app.request("POST", "/v1/meters", { name: "tok", event_name: "exact", aggregation: { type: "SUM", field: "tokens" } })
      expect(meter.status).toBe(201)
      await app.request("POST", "/v1/customers", { external_id: "exact-1" })
      const ts = hourAgo().toISOString()
      for (let b = 0; b < 10; b++) {
        const events = Array.from({ length: 1000 }, (_, i) => ({
          event_id: `exact-${b}-${i}`,
          event_name: "exact",
          external_customer_id: "exact-1",
          timestamp: ts,
          properties: { tokens: 0.1 }
        }))
        const res = await app.request("POST", "/v1/events/bulk", { events })
        expect(res.status).toBe(202)
        expect(res.data.accepted).toBe(1000)
      }
      // re-send a whole batch: nothing new
      const again = await app.request("POST", "/v1/events/bulk", {
        events: [{ event_id: "exact-0-0", event_name: "exact", external_customer_id: "exact-1", timestamp: ts, properties: { tokens: 0.1 } }]
      })
      expect(again.body).toMatchObject({ accepted: 0, duplicates: 1 })
      const total = await app.run(
        aggregateTotal(app, meter.data.id)
      )
      expect(total).toBe("1000")
    })

    it("a meter created or deleted applies to the very next ingest in this process (the meter cache is dropped)", async () => {
      await app.request("POST", "/v1/customers", { external_id: "mc-1" })
      const first = await app.request("POST", "/v1/meters", { name: "mc-a", event_name: "mc", aggregation: { type: "COUNT" } })
      const send = (id: string) =>
        app.request("POST", "/v1/events/bulk", { events: [{ event_id: id, event_name: "mc", external_customer_id: "mc-1", timestamp: hourAgo().toISOString() }] })
      expect((await send("mc-e1")).data.accepted).toBe(1) // warms the cache with [mc-a]
      const second = await app.request("POST", "/v1/meters", { name: "mc-b", event_name: "mc", aggregation: { type: "COUNT" } })
      await send("mc-e2")
      expect(await app.run(aggregateTotal(app, second.data.id))).toBe("1")
      expect((await app.request("DELETE", `/v1/meters/${first.data.id}`)).status).toBe(200)
      await send("mc-e3")
      expect(await app.run(aggregateTotal(app, first.data.id))).toBe("2")
      expect(await app.run(aggregateTotal(app, second.data.id))).toBe("2")
    })

    it("processes events of a customer that does not exist yet once it is created", async () => {
      const meter = await app.request("POST", "/v1/meters", { name: "later", event_name: "later", aggregation: { type: "SUM", field: "n" } })
      const ts = hourAgo().toISOString()
      const res = await app.request("POST", "/v1/events/bulk", {
        events: [
          { event_id: "later-1", event_name: "later", external_customer_id: "later-c", timestamp: ts, properties: { n: "2.5" } },
          { event_id: "later-2", event_name: "later", external_customer_id: "later-c", timestamp: ts, properties: { n: 1 } }
        ]
      })
      expect(res.data.accepted).toBe(2)
      const before = await app.request("GET", "/v1/events?external_customer_id=later-c")
      expect(before.data.events.map((e) => e.status)).toEqual(["pending", "pending"])
      expect(await app.run(aggregateTotal(app, meter.data.id))).toBe("0")
      await app.request("POST", "/v1/customers", { external_id: "later-c" })
      const after = await app.request("GET", "/v1/events?external_customer_id=later-c")
      expect(after.data.events.map((e) => e.status)).toEqual(["processed", "processed"])
      expect(await app.run(aggregateTotal(app, meter.data.id))).toBe("3.5")
    })

    it("stores the good events of a bulk request and reports the bad ones by index", async () => {
      await app.request("POST", "/v1/meters", { name: "bulk", event_name: "bulk", aggregation: { type: "SUM", field: "v" } })
      await app.request("POST", "/v1/customers", { external_id: "bulk-c" })
      const res = await app.request("POST", "/v1/events/bulk", {
        events: [
          { event_id: "b-ok-1", event_name: "bulk", external_customer_id: "bulk-c", properties: { v: 1 } },
          { event_id: "b-bad-1", external_customer_id: "bulk-c" },
          { event_id: "b-bad-2", event_name: "bulk", external_customer_id: "bulk-c", timestamp: "yesterday" },
          "not an object",
          { event_id: "b-err", event_name: "bulk", external_customer_id: "bulk-c", properties: { v: "abc" } },
          { event_id: "b-ok-2", event_name: "bulk", external_customer_id: "bulk-c", properties: { v: "2" } }
        ]
      })
      expect(res.status).toBe(202)
      expect(res.data.accepted).toBe(3)
      expect(res.data.rejected.map((r) => [r.index, r.code])).toEqual([
        [1, "invalid_event_name"],
        [2, "invalid_timestamp"],
        [3, "invalid_event"]
      ])
      const listed = await app.request("GET", "/v1/events?external_customer_id=bulk-c")
      const err = listed.data.events.find((e) => e.event_id === "b-err")
      expect(err?.status).toBe("error")
      expect(err?.error).toContain("not numeric")
    })

    it("answers malformed JSON, oversized and wrong-typed bodies with 400/413 and the envelope", async () => {
      const malformed = await app.request("POST", "/v1/events", undefined, { rawBody: "{bad" })
      expect(malformed.status).toBe(400)
      expect(malformed.error.code).toBe("malformed_json")
      const tooMany = await app.request("POST", "/v1/events/bulk", {
        events: Array.from({ length: 1001 }, (_, i) => ({ event_name: "x", external_customer_id: `c${i}` }))
      })
      expect(tooMany.status).toBe(400)
      expect(tooMany.error.code).toBe("too_many_events")
      const huge = await app.request("POST", "/v1/events/bulk", undefined, { rawBody: `{"events":[${"1,".repeat(3_000_000)}1]}` })
      expect(huge.status).toBe(413)
      expect(huge.error.code).toBe("payload_too_large")
      const wrongType = await app.request("POST", "/v1/customers", { external_id: 5 })
      expect(wrongType.status).toBe(400)
      expect(wrongType.error.code).toBe("invalid_request")
      const malformedCustomer = await app.request("POST", "/v1/customers", undefined, { rawBody: "{bad" })
      expect(malformedCustomer.status).toBe(400)
      expect(malformedCustomer.error).toBeDefined()
      const single = await app.request("POST", "/v1/events", { event_name: "x" })
      expect(single.status).toBe(400)
      expect(single.error.code).toBe("invalid_external_customer_id")
    })
  })
})

import { Effect, Stream, Chunk } from "effect"
import { EventStore } from "../../src/events/EventStore.js"

/** Independent check through the EventStore: total billable of a meter over all time. */
const aggregateTotal = (app: TestApp, meterId: string) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const groups = yield* Stream.runCollect(
      store.aggregateBillable({
        scope: app.scope,
        windowStart: new Date(0),
        windowEnd: new Date(Date.now() + 3600_000),
        ingestedBefore: new Date(Date.now() + 3600_000),
        meterIds: [meterId],
        pageSize: 1000
      })
    )
    return O.format(O.sum(Chunk.toReadonlyArray(groups).map((g) => g.quantity)))
  })

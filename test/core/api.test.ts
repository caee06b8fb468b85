/**
 * Core API over HTTP on every relational backend: tenant isolation, customers, meters, events
 * (exact decimals, idempotency, pending customers, bulk validation), error envelope. Calls go
 * through the API's typed client (test/support/TestApp.ts); bodies the client refuses to send
 * (malformed JSON, wrong types, events without a name) go through `raw`.
 */
import { layer } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import { expect } from "vitest"
import { IngestResult } from "../../src/domain/Models.js"
import { EventStore } from "../../src/events/EventStore.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, apiError, raw, TestTenant } from "../support/TestApp.js"

const hourAgo = () => {
  const d = new Date(Date.now() - 2 * 3600_000)
  d.setUTCMinutes(0, 0, 0)
  return d
}

/** Independent check through the EventStore: total billable of a meter over all time (sum by the BigInt oracle). */
const aggregateTotal = (meterId: string) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const { scope } = yield* TestTenant
    const groups = yield* Stream.runCollect(
      store.aggregateBillable({
        scope,
        windowStart: new Date(0),
        windowEnd: new Date(Date.now() + 3600_000),
        ingestedBefore: new Date(Date.now() + 3600_000),
        meterIds: [meterId],
        pageSize: 1000
      })
    )
    return O.format(O.sum(Chunk.toReadonlyArray(groups).map((g) => g.quantity)))
  })

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(TestApp.layer({ backend }), { excludeTestServices: true })(`core API on ${backend}`, (it) => {
    it.effect("rejects requests without or with a wrong API key with the error envelope", () =>
      Effect.gen(function* () {
        // the exact envelope on the wire: no `details` when the code has none
        const missing = yield* raw("GET", "/v1/customers", { apiKey: "" })
        expect(missing.status).toBe(401)
        expect(JSON.parse(missing.text)).toEqual({ error: { code: "missing_api_key", message: expect.any(String) } })
        const wrong = yield* apiError(Effect.flatMap(TestApp.makeClient("fp_nope"), (c) => c.customers.list({ urlParams: {} })))
        expect([wrong._tag, wrong.code]).toEqual(["Unauthorized", "invalid_api_key"])
      })
    )

    it.effect("creates, reads, updates and deletes customers; duplicate external_id is 409", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const [created, response] = yield* api.customers.create({
          payload: { external_id: "crud-1", name: "A", metadata: { plan: "pro", billing_tier: "gold" } },
          withResponse: true
        })
        expect(response.status).toBe(201)
        expect(created.id).toMatch(/^cust_/)
        const dup = yield* apiError(api.customers.create({ payload: { external_id: "crud-1" } }))
        expect([dup._tag, dup.code]).toEqual(["Conflict", "customer_exists"])
        const byExt = yield* api.customers.list({ urlParams: { external_id: "crud-1" } })
        expect(byExt.customers.map((c) => c.id)).toEqual([created.id])
        const updated = yield* api.customers.update({ path: { id: created.id }, payload: { email: "a@example.com" } })
        // metadata keys come back exactly as sent (no snake_case → camelCase rewriting inside JSON)
        expect(updated).toMatchObject({ name: "A", email: "a@example.com", metadata: { plan: "pro", billing_tier: "gold" } })
        expect(yield* api.customers.delete({ path: { id: created.id } })).toEqual({ id: created.id, deleted: true })
        const gone = yield* apiError(api.customers.get({ path: { id: created.id } }))
        expect([gone._tag, gone.code]).toEqual(["NotFound", "customer_not_found"])
      })
    )

    it.effect("keeps tenants apart: another tenant sees none of this tenant's data", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const other = (yield* TestApp.newTenant("other")).client
        const mine = yield* api.customers.create({ payload: { external_id: "iso-1" } })
        const meter = yield* api.meters.create({ payload: { name: "m", event_name: "iso", aggregation: { type: "COUNT" } } })
        yield* api.events.ingest({ payload: { event_id: "iso-e1", event_name: "iso", external_customer_id: "iso-1" } })
        const notFound = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]
        expect(notFound(yield* apiError(other.customers.get({ path: { id: mine.id } })))).toEqual(["NotFound", "customer_not_found"])
        expect((yield* other.customers.list({ urlParams: { external_id: "iso-1" } })).customers).toEqual([])
        expect(notFound(yield* apiError(other.meters.get({ path: { id: meter.id } })))).toEqual(["NotFound", "meter_not_found"])
        expect((yield* other.events.list({ urlParams: { external_customer_id: "iso-1" } })).events).toEqual([])
        expect(notFound(yield* apiError(other.customers.delete({ path: { id: mine.id } })))).toEqual(["NotFound", "customer_not_found"])
        // the same external id is free in the other tenant
        const [, theirs] = yield* other.customers.create({ payload: { external_id: "iso-1" }, withResponse: true })
        expect(theirs.status).toBe(201)
        expect((yield* api.customers.get({ path: { id: mine.id } })).id).toBe(mine.id)
      })
    )

    it.effect("validates meters", () =>
      Effect.gen(function* () {
        // the typed client refuses both bodies itself (the Schema's filter and literal): sent raw
        const bad = yield* raw("POST", "/v1/meters", { body: JSON.stringify({ name: "x", event_name: "x", aggregation: { type: "SUM" } }) })
        expect([bad.status, bad.error?.code]).toEqual([400, "invalid_request"])
        const wrongType = yield* raw("POST", "/v1/meters", { body: JSON.stringify({ name: "x", event_name: "x", aggregation: { type: "AVG" } }) })
        expect([wrongType.status, wrongType.error?.code]).toEqual([400, "invalid_request"])
      })
    )

    it.effect("sums 10,000 events of 0.1 to exactly 1000 and counts a re-sent event_id once", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const [meter, created] = yield* api.meters.create({
          payload: { name: "tok", event_name: "exact", aggregation: { type: "SUM", field: "tokens" } },
          withResponse: true
        })
        expect(created.status).toBe(201)
        yield* api.customers.create({ payload: { external_id: "exact-1" } })
        const ts = hourAgo().toISOString()
        for (let b = 0; b < 10; b++) {
          const events = Array.from({ length: 1000 }, (_, i) => ({
            event_id: `exact-${b}-${i}`,
            event_name: "exact",
            external_customer_id: "exact-1",
            timestamp: ts,
            properties: { tokens: 0.1 }
          }))
          const [res, response] = yield* api.events.bulk({ payload: { events }, withResponse: true })
          expect(response.status).toBe(202)
          expect(res.accepted).toBe(1000)
        }
        // re-send a whole batch: nothing new
        const again = yield* api.events.bulk({
          payload: { events: [{ event_id: "exact-0-0", event_name: "exact", external_customer_id: "exact-1", timestamp: ts, properties: { tokens: 0.1 } }] }
        })
        expect(again).toMatchObject({ accepted: 0, duplicates: 1 })
        expect(yield* aggregateTotal(meter.id)).toBe("1000")
      })
    )

    it.effect("a meter created or deleted applies to the very next ingest in this process (the meter cache is dropped)", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        yield* api.customers.create({ payload: { external_id: "mc-1" } })
        const first = yield* api.meters.create({ payload: { name: "mc-a", event_name: "mc", aggregation: { type: "COUNT" } } })
        const send = (id: string) =>
          api.events.bulk({ payload: { events: [{ event_id: id, event_name: "mc", external_customer_id: "mc-1", timestamp: hourAgo().toISOString() }] } })
        expect((yield* send("mc-e1")).accepted).toBe(1) // warms the cache with [mc-a]
        const second = yield* api.meters.create({ payload: { name: "mc-b", event_name: "mc", aggregation: { type: "COUNT" } } })
        yield* send("mc-e2")
        expect(yield* aggregateTotal(second.id)).toBe("1")
        expect(yield* api.meters.delete({ path: { id: first.id } })).toEqual({ id: first.id, deleted: true })
        yield* send("mc-e3")
        expect(yield* aggregateTotal(first.id)).toBe("2")
        expect(yield* aggregateTotal(second.id)).toBe("2")
      })
    )

    it.effect("processes events of a customer that does not exist yet once it is created", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const meter = yield* api.meters.create({ payload: { name: "later", event_name: "later", aggregation: { type: "SUM", field: "n" } } })
        const ts = hourAgo().toISOString()
        const res = yield* api.events.bulk({
          payload: {
            events: [
              { event_id: "later-1", event_name: "later", external_customer_id: "later-c", timestamp: ts, properties: { n: "2.5" } },
              { event_id: "later-2", event_name: "later", external_customer_id: "later-c", timestamp: ts, properties: { n: 1 } }
            ]
          }
        })
        expect(res.accepted).toBe(2)
        const before = yield* api.events.list({ urlParams: { external_customer_id: "later-c" } })
        expect(before.events.map((e) => e.status)).toEqual(["pending", "pending"])
        expect(yield* aggregateTotal(meter.id)).toBe("0")
        yield* api.customers.create({ payload: { external_id: "later-c" } })
        const after = yield* api.events.list({ urlParams: { external_customer_id: "later-c" } })
        expect(after.events.map((e) => e.status)).toEqual(["processed", "processed"])
        expect(yield* aggregateTotal(meter.id)).toBe("3.5")
      })
    )

    it.effect("stores the good events of a bulk request and reports the bad ones by index", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        yield* api.meters.create({ payload: { name: "bulk", event_name: "bulk", aggregation: { type: "SUM", field: "v" } } })
        yield* api.customers.create({ payload: { external_id: "bulk-c" } })
        // events the Schema refuses (no name, a bad timestamp is fine for it, not an object): sent raw
        const res = yield* raw("POST", "/v1/events/bulk", {
          body: JSON.stringify({
            events: [
              { event_id: "b-ok-1", event_name: "bulk", external_customer_id: "bulk-c", properties: { v: 1 } },
              { event_id: "b-bad-1", external_customer_id: "bulk-c" },
              { event_id: "b-bad-2", event_name: "bulk", external_customer_id: "bulk-c", timestamp: "yesterday" },
              "not an object",
              { event_id: "b-err", event_name: "bulk", external_customer_id: "bulk-c", properties: { v: "abc" } },
              { event_id: "b-ok-2", event_name: "bulk", external_customer_id: "bulk-c", properties: { v: "2" } }
            ]
          })
        })
        expect(res.status).toBe(202)
        const result = res.as(IngestResult)
        expect(result.accepted).toBe(3)
        expect(result.rejected.map((r) => [r.index, r.code])).toEqual([
          [1, "invalid_event_name"],
          [2, "invalid_timestamp"],
          [3, "invalid_event"]
        ])
        const listed = yield* api.events.list({ urlParams: { external_customer_id: "bulk-c" } })
        const err = listed.events.find((e) => e.event_id === "b-err")
        expect(err?.status).toBe("error")
        expect(err?.error).toContain("not numeric")
      })
    )

    it.effect("answers malformed JSON, oversized and wrong-typed bodies with 400/413 and the envelope", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const malformed = yield* raw("POST", "/v1/events", { body: "{bad" })
        expect([malformed.status, malformed.error?.code]).toEqual([400, "malformed_json"])
        const tooMany = yield* apiError(
          api.events.bulk({ payload: { events: Array.from({ length: 1001 }, (_, i) => ({ event_name: "x", external_customer_id: `c${i}` })) } })
        )
        expect([tooMany._tag, tooMany.code]).toEqual(["InvalidInput", "too_many_events"])
        const huge = yield* raw("POST", "/v1/events/bulk", { body: `{"events":[${"1,".repeat(3_000_000)}1]}` })
        expect([huge.status, huge.error?.code]).toEqual([413, "payload_too_large"])
        const wrongType = yield* raw("POST", "/v1/customers", { body: JSON.stringify({ external_id: 5 }) })
        expect([wrongType.status, wrongType.error?.code]).toEqual([400, "invalid_request"])
        const malformedCustomer = yield* raw("POST", "/v1/customers", { body: "{bad" })
        expect([malformedCustomer.status, malformedCustomer.error?.code]).toEqual([400, "malformed_json"])
        const single = yield* raw("POST", "/v1/events", { body: JSON.stringify({ event_name: "x" }) })
        expect([single.status, single.error?.code]).toEqual([400, "invalid_external_customer_id"])
      })
    )
  })
})

/**
 * Ingestion through the HTTP API into ClickHouse: a re-sent event_id with a timestamp in another
 * hour is a duplicate (counted once, in the first copy's hour), on PGlite + ClickHouse and on
 * PostgreSQL + ClickHouse; and on a PostgreSQL server the ingest check + insert of one tenant waits
 * for the tenant's advisory lock (what serialises replicas), while other tenants go on.
 */
import { SqlClient } from "@effect/sql"
import { layer } from "@effect/vitest"
import { Chunk, Deferred, Effect, Fiber, Option, Stream } from "effect"
import { expect } from "vitest"
import { EventStore } from "../../src/events/EventStore.js"
import { TENANT_INGEST_LOCK_CLASS, tenantLockName } from "../../src/events/IngestWatermark.js"
import { forEachBackend } from "../support/app.js"
import { CLICKHOUSE_TEST_DATABASE, withClickHouse } from "../support/clickhouse.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, newTenant, TestTenant } from "../support/TestApp.js"

const HOUR = new Date("2025-06-01T10:00:00.000Z")
const at = (minutes: number) => new Date(HOUR.getTime() + minutes * 60_000).toISOString()

const tokens = (eventId: string, timestamp: string, n: number) => ({
  events: [{ event_id: eventId, event_name: "tokens", external_customer_id: "ext-r", timestamp, properties: { n } }]
})

const resendScenario = Effect.gen(function* () {
  const api = yield* ApiClient
  const { scope } = yield* TestTenant
  const [, meter] = yield* api.meters.create({ payload: { name: "Tokens", event_name: "tokens", aggregation: { type: "SUM", field: "n" } }, withResponse: true })
  expect(meter.status).toBe(201)
  const [, customer] = yield* api.customers.create({ payload: { external_id: "ext-r" }, withResponse: true })
  expect(customer.status).toBe(201)
  const send = (timestamp: string) => api.events.bulk({ payload: tokens("evt-resent", timestamp, 3), withResponse: true })
  const [first, firstResponse] = yield* send(at(50))
  expect(firstResponse.status).toBe(202)
  expect(first).toMatchObject({ accepted: 1, duplicates: 0 })
  // the client's retry crosses the hour boundary
  const [retry, retryResponse] = yield* send(at(65))
  expect(retryResponse.status).toBe(202)
  expect(retry).toMatchObject({ accepted: 0, duplicates: 1 })
  const sql = yield* SqlClient.SqlClient
  const meterIds = yield* sql<{ id: string }>`SELECT id FROM meters WHERE tenant_id = ${scope.tenantId}`
  const store = yield* EventStore
  const read = (start: number) =>
    Stream.runCollect(
      store.aggregateBillable({
        scope,
        windowStart: new Date(at(start)),
        windowEnd: new Date(at(start + 60)),
        ingestedBefore: new Date(Date.now() + 60_000),
        meterIds: meterIds.map((m) => m.id),
        pageSize: 100
      })
    ).pipe(Effect.map((groups) => Chunk.toReadonlyArray(groups).map((g) => [g.quantity, g.eventCount])))
  expect(yield* read(0)).toEqual([["3", 1]])
  expect(yield* read(60)).toEqual([])
})

withClickHouse((url) => {
  layer(TestApp.layer({ backend: "clickhouse" }), { excludeTestServices: true })("ingest into ClickHouse, PGlite relational store", (it) => {
    it.effect("a resend in another hour is a duplicate, counted once in the first copy's hour", () => resendScenario, 120_000)
  })

  forEachBackend(["postgres"], () => {
    const env = { FLEXPRICE_CLICKHOUSE_URL: url, FLEXPRICE_CLICKHOUSE_DATABASE: CLICKHOUSE_TEST_DATABASE }
    layer(TestApp.layer({ backend: "postgres", env }), { excludeTestServices: true })("ingest into ClickHouse, PostgreSQL server", (it) => {
      it.effect(
        "a resend in another hour is a duplicate; one tenant's ingest waits for its advisory lock, others do not",
        () =>
          Effect.gen(function* () {
            yield* resendScenario
            const api = yield* ApiClient
            const { scope } = yield* TestTenant
            const sql = yield* SqlClient.SqlClient

            // Another replica holds this tenant's lock (a transaction on its own connection).
            const holding = yield* Deferred.make<void>()
            const release = yield* Deferred.make<void>()
            const holder = yield* Effect.fork(
              sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql`SELECT pg_advisory_xact_lock(${TENANT_INGEST_LOCK_CLASS}, hashtext(${tenantLockName(scope)}))`
                  yield* Deferred.succeed(holding, undefined)
                  yield* Deferred.await(release)
                })
              )
            )
            yield* Deferred.await(holding)
            const blocked = yield* Effect.fork(api.events.bulk({ payload: tokens("evt-blocked", at(30), 1), withResponse: true }))
            const other = yield* newTenant("other")
            const [, free] = yield* other.client.events.bulk({ payload: tokens("evt-free", at(30), 1), withResponse: true })
            expect(free.status).toBe(202)
            yield* Effect.sleep("1500 millis")
            expect(Option.isNone(yield* Fiber.poll(blocked))).toBe(true)
            yield* Deferred.succeed(release, undefined)
            yield* Fiber.join(holder)
            const [res, response] = yield* Fiber.join(blocked)
            expect(response.status).toBe(202)
            expect(res).toMatchObject({ accepted: 1 })
          }),
        120_000
      )
    })
  })
})

/**
 * Ingestion through the HTTP API into ClickHouse: a re-sent event_id with a timestamp in another
 * hour is a duplicate (counted once, in the first copy's hour), on PGlite + ClickHouse and on
 * PostgreSQL + ClickHouse; and on a PostgreSQL server the ingest check + insert of one tenant waits
 * for the tenant's advisory lock (what serialises replicas), while other tenants go on.
 */
import { SqlClient } from "@effect/sql"
import { Chunk, Deferred, Effect, Stream } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { EventStore } from "../../src/events/EventStore.js"
import { TENANT_INGEST_LOCK_CLASS, tenantLockName } from "../../src/events/IngestWatermark.js"
import { startTestApp, type TestApp } from "../support/app.js"
import { withClickHouse, withServiceUrl } from "../support/clickhouse.js"

const apps: Array<TestApp> = []
afterAll(async () => {
  for (const app of apps) await app.dispose()
})

const HOUR = new Date("2025-06-01T10:00:00.000Z")
const at = (minutes: number) => new Date(HOUR.getTime() + minutes * 60_000).toISOString()

const resendScenario = (app: TestApp) => async () => {
  expect((await app.request("POST", "/v1/meters", { name: "Tokens", event_name: "tokens", aggregation: { type: "SUM", field: "n" } })).status).toBe(201)
  expect((await app.request("POST", "/v1/customers", { external_id: "ext-r" })).status).toBe(201)
  const send = (timestamp: string, n: string) =>
    app.request("POST", "/v1/events/bulk", {
      events: [{ event_id: "evt-resent", event_name: "tokens", external_customer_id: "ext-r", timestamp, properties: { n: Number(n) } }]
    })
  const first = await send(at(50), "3")
  expect(first.status).toBe(202)
  expect(first.body).toMatchObject({ accepted: 1, duplicates: 0 })
  // the client's retry crosses the hour boundary
  const retry = await send(at(65), "3")
  expect(retry.status).toBe(202)
  expect(retry.body).toMatchObject({ accepted: 0, duplicates: 1 })
  const meterIds = await app.run(
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ id: string }>`SELECT id FROM meters WHERE tenant_id = ${app.scope.tenantId}`)
  )
  const read = async (start: number) =>
    Chunk.toReadonlyArray(
      await app.run(
        Effect.flatMap(EventStore, (store) =>
          Stream.runCollect(
            store.aggregateBillable({
              scope: app.scope,
              windowStart: new Date(at(start)),
              windowEnd: new Date(at(start + 60)),
              ingestedBefore: new Date(Date.now() + 60_000),
              meterIds: meterIds.map((m) => m.id),
              pageSize: 100
            })
          )
        )
      )
    ).map((g) => [g.quantity, g.eventCount])
  expect(await read(0)).toEqual([["3", 1]])
  expect(await read(60)).toEqual([])
}

withClickHouse((url) => {
  describe("ingest into ClickHouse, PGlite relational store", () => {
    it("a resend in another hour is a duplicate, counted once in the first copy's hour", { timeout: 120_000 }, async () => {
      const app = await startTestApp({ backend: "clickhouse" })
      apps.push(app)
      await resendScenario(app)()
    })
  })

  withServiceUrl({ label: "postgres", envVar: "FLEXPRICE_TEST_POSTGRES_URL", example: "postgres://postgres@127.0.0.1:5432/postgres" }, () => {
    describe("ingest into ClickHouse, PostgreSQL server", () => {
      it("a resend in another hour is a duplicate; one tenant's ingest waits for its advisory lock, others do not", { timeout: 120_000 }, async () => {
        const app = await startTestApp({
          backend: "postgres",
          env: { FLEXPRICE_CLICKHOUSE_URL: url, FLEXPRICE_CLICKHOUSE_DATABASE: "flexprice_test" }
        })
        apps.push(app)
        await resendScenario(app)()

        // Another replica holds this tenant's lock (a transaction on its own connection).
        const holding = Effect.runSync(Deferred.make<void>())
        const release = Effect.runSync(Deferred.make<void>())
        const holder = app.run(
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql.withTransaction(
              Effect.gen(function* () {
                yield* sql`SELECT pg_advisory_xact_lock(${TENANT_INGEST_LOCK_CLASS}, hashtext(${tenantLockName(app.scope)}))`
                yield* Deferred.succeed(holding, undefined)
                yield* Deferred.await(release)
              })
            )
          )
        )
        await Effect.runPromise(Deferred.await(holding))
        const event = (id: string) => ({ events: [{ event_id: id, event_name: "tokens", external_customer_id: "ext-r", timestamp: at(30), properties: { n: 1 } }] })
        let done = false
        const blocked = app.request("POST", "/v1/events/bulk", event("evt-blocked")).then((r) => {
          done = true
          return r
        })
        const other = await app.newTenant("other")
        const free = await app.request("POST", "/v1/events/bulk", event("evt-free"), { apiKey: other.apiKey })
        expect(free.status).toBe(202)
        await new Promise((r) => setTimeout(r, 1_500))
        expect(done).toBe(false)
        await Effect.runPromise(Deferred.succeed(release, undefined))
        await holder
        const res = await blocked
        expect(res.status).toBe(202)
        expect(res.body).toMatchObject({ accepted: 1 })
      })
    })
  })
})

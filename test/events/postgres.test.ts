/**
 * The shared EventStore contract on the PostgreSQL backend (PGlite and a PostgreSQL server), and
 * the relational store's one-statement ingest write (customers resolved inside it).
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, layer as itLayer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Chunk, Deferred, Effect, Fiber, Layer, Option, Redacted, Stream } from "effect"
import * as Database from "../../src/db/Database.js"
import { asOwner, inTenant } from "../../src/db/RowSecurity.js"
import { newId, TenantScope } from "../../src/domain/Ids.js"
import { EventStore } from "../../src/events/EventStore.js"
import { INGEST_LOCK_KEY } from "../../src/events/IngestWatermark.js"
import * as PgEventStore from "../../src/events/PgEventStore.js"
import { forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"
import { eventStoreContract, freshScope } from "./EventStoreContract.js"

/** A migrated database of the backend, created when the suite's layer is built. */
const databaseFor = (backend: "pglite" | "postgres") =>
  backend === "pglite"
    ? Layer.suspend(() => Database.layerFrom({ url: Option.none(), dataDir: freshDataDir() }))
    : Layer.unwrapScoped(
        Effect.map(
          Effect.acquireRelease(
            Effect.promise(() => freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)),
            (db) => Effect.promise(() => db.drop())
          ),
          (db) => Database.layerMigrated({ url: Option.some(Redacted.make(db.url)), dataDir: "" }).pipe(Layer.provide(NodeContext.layer))
        )
      )

forEachBackend(["pglite", "postgres"], (backend) => {
  if (backend === "clickhouse") return
  eventStoreContract(`EventStore contract on ${backend}`, PgEventStore.layer.pipe(Layer.provide(databaseFor(backend))))
})

const T0 = new Date("2025-03-01T10:00:00.000Z")
const minutes = (d: Date, m: number) => new Date(d.getTime() + m * 60_000)

/** Exact decimal sum of the inputs (independent of the store): scaled BigInts, 12 places. */
const exactSum = (values: ReadonlyArray<string>): string => {
  const scaled = values.reduce((acc, v) => {
    const [int, frac = ""] = v.split(".")
    return acc + BigInt(int! + frac.padEnd(12, "0"))
  }, 0n)
  const s = scaled.toString().padStart(13, "0")
  const frac = s.slice(-12).replace(/0+$/, "")
  return frac === "" ? s.slice(0, -12) : `${s.slice(0, -12)}.${frac}`
}

forEachBackend(["pglite", "postgres"], (backend) => {
  if (backend === "clickhouse") return
  describe(`ingestResolving on ${backend} (the ingest write, customers resolved inside the statement)`, () => {
    itLayer(PgEventStore.layer.pipe(Layer.provideMerge(databaseFor(backend))), { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("resolves customers of its own environment only; pending rows for the others; first copy wins; exact sums", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const sql = yield* PgClient.PgClient
          const ingest = store.ingestResolving!
          const scope = freshScope()
          const other = new TenantScope({ tenantId: scope.tenantId, environmentId: newId.environment() })
          const addCustomer = (s: TenantScope, id: string, externalId: string) =>
            sql`INSERT INTO customers (id, tenant_id, environment_id, external_id)
              VALUES (${id}, ${s.tenantId}, ${s.environmentId}, ${externalId})`.pipe(inTenant(s))
          yield* addCustomer(scope, "cust_a", "ext-a")
          // the same external id in another environment is not this environment's customer
          yield* addCustomer(other, "cust_other", "ext-p")
          const odd = '{"note":"tab\\there, back\\\\slash, new\\nline, quote \\" ü"}'
          const event = (eventId: string, externalCustomerId: string, over: { propertiesJson?: string; error?: string | null; timestamp?: Date } = {}) =>
            ({ eventId, eventName: "api_call", externalCustomerId, timestamp: T0, propertiesJson: "{}", error: null, ...over })
          const at1 = minutes(T0, 30)
          const sorted = (rows: ReadonlyArray<{ eventId: string; customerId: string | null }>) =>
            [...rows].map((r) => [r.eventId, r.customerId]).sort((a, b) => String(a[0]).localeCompare(String(b[0])))
          const first = yield* ingest({
            scope,
            stamp: { _tag: "At", at: at1 },
            events: [
              event("e1", "ext-a", { propertiesJson: odd }),
              event("e2", "ext-a", { error: "meter mtr_b: tab\there" }),
              // would be an error with a customer; pending, it has none yet
              event("e3", "ext-p", { propertiesJson: '{"k":1}', error: "meter mtr_b: not numeric" }),
              event("e5", "ext-a")
            ],
            processed: [
              { eventId: "e1", meterId: "mtr_a", qty: "0.1" },
              { eventId: "e1", meterId: "mtr_b", qty: "2.000000000001" },
              { eventId: "e2", meterId: "mtr_a", qty: "0.2" },
              { eventId: "e3", meterId: "mtr_a", qty: "9" },
              { eventId: "e5", meterId: "mtr_a", qty: "5" }
            ]
          })
          expect(sorted(first)).toEqual([["e1", "cust_a"], ["e2", "cust_a"], ["e3", null], ["e5", "cust_a"]])

          // re-sent e1 (other properties and quantity) and e3 add nothing; e4 is new
          const second = yield* ingest({
            scope,
            stamp: { _tag: "At", at: minutes(T0, 40) },
            events: [event("e1", "ext-a"), event("e3", "ext-p"), event("e4", "ext-a", { timestamp: minutes(T0, 1) })],
            processed: [
              { eventId: "e1", meterId: "mtr_a", qty: "100" },
              { eventId: "e3", meterId: "mtr_a", qty: "7" },
              { eventId: "e4", meterId: "mtr_a", qty: "0.3" }
            ]
          })
          expect(sorted(second)).toEqual([["e4", "cust_a"]])
          expect(yield* ingest({ scope, stamp: { _tag: "At", at: at1 }, events: [], processed: [] })).toEqual([])

          const groups = Chunk.toReadonlyArray(
            yield* Stream.runCollect(
              store.aggregateBillable({ scope, windowStart: T0, windowEnd: minutes(T0, 60), ingestedBefore: minutes(T0, 24 * 60), meterIds: ["mtr_a", "mtr_b"], pageSize: 100 })
            )
          )
          const total = (meter: string) => groups.filter((g) => g.meterId === meter).map((g) => [g.customerId, g.quantity, g.eventCount])
          expect(total("mtr_a")).toEqual([["cust_a", exactSum(["0.1", "0.2", "5", "0.3"]), 4]])
          expect(total("mtr_b")).toEqual([["cust_a", exactSum(["2.000000000001"]), 1]])

          const page = yield* store.listEvents({ scope, limit: 100 })
          const byId = new Map(page.events.map((e) => [e.eventId, e]))
          expect([...byId.keys()].sort()).toEqual(["e1", "e2", "e3", "e4", "e5"])
          expect([byId.get("e1")!.propertiesJson, byId.get("e1")!.status, byId.get("e1")!.customerId]).toEqual([odd, "processed", "cust_a"])
          expect(byId.get("e1")!.ingestedAt.toISOString()).toBe(at1.toISOString())
          expect([byId.get("e2")!.status, byId.get("e2")!.error]).toEqual(["error", "meter mtr_b: tab\there"])
          expect([byId.get("e3")!.status, byId.get("e3")!.customerId, byId.get("e3")!.error]).toEqual(["pending", null, null])
          const pending = yield* sql<{ eventId: string; externalCustomerId: string; properties: string; ingestedAt: Date }>`
            SELECT event_id, external_customer_id, properties::text AS properties, ingested_at FROM pending_events
            WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`.pipe(inTenant(scope))
          expect(pending.map((p) => [p.eventId, p.externalCustomerId, p.properties, new Date(p.ingestedAt).toISOString()])).toEqual([
            ["e3", "ext-p", '{"k":1}', at1.toISOString()]
          ])
          expect((yield* store.listEvents({ scope: other, limit: 100 })).events).toEqual([])
        })
      )

      if (backend === "postgres") {
        it.effect("stamped by the statement: the clock is read after the watermark's lock is granted, and the lock is held to commit", () =>
          Effect.gen(function* () {
            const store = yield* EventStore
            const sql = yield* PgClient.PgClient
            const scope = freshScope()
            const event = (eventId: string) => ({ eventId, eventName: "api_call", externalCustomerId: "ext-x", timestamp: T0, propertiesJson: "{}", error: null })
            const write = (ids: ReadonlyArray<string>) =>
              store.ingestResolving!({ scope, stamp: { _tag: "AfterSharedLock", key: INGEST_LOCK_KEY }, events: ids.map(event), processed: [] })
            const stampOf = (eventId: string) =>
              Effect.map(
                sql<{ at: Date }>`SELECT ingested_at AS at FROM events WHERE tenant_id = ${scope.tenantId}
                  AND environment_id = ${scope.environmentId} AND event_id = ${eventId}`.pipe(inTenant(scope)),
                (rows) => new Date(rows[0]!.at).getTime()
              )

            // 1. a watermark reader holds the lock exclusively: the write waits, then stamps after it
            const readerHolds = yield* Deferred.make<void>()
            const readerGo = yield* Deferred.make<void>()
            const reader = yield* Effect.fork(
              sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql`SELECT pg_advisory_xact_lock(${INGEST_LOCK_KEY})`
                  yield* Deferred.succeed(readerHolds, undefined)
                  yield* Deferred.await(readerGo)
                  const rows = yield* sql<{ now: Date }>`SELECT clock_timestamp() AS now`
                  return new Date(rows[0]!.now).getTime()
                })
              ).pipe(asOwner("test: a watermark reader"))
            )
            yield* Deferred.await(readerHolds)
            const writer = yield* Effect.fork(write(["w1"]))
            yield* Effect.sleep("300 millis")
            yield* Deferred.succeed(readerGo, undefined)
            const readerClock = yield* Fiber.join(reader)
            expect((yield* Fiber.join(writer)).map((r) => r.eventId)).toEqual(["w1"])
            // The watermark a reader answers is its clock − 1 ms (IngestWatermark.current): a stamp in
            // the reader's own millisecond is still above it; one read before the lock was granted
            // (300 ms before the reader's clock here) is not.
            expect(yield* stampOf("w1")).toBeGreaterThanOrEqual(readerClock)

            // 2. a write still in progress (blocked on another transaction's row) keeps the lock
            const blockerHolds = yield* Deferred.make<void>()
            const blockerGo = yield* Deferred.make<void>()
            const blocker = yield* Effect.fork(
              sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql`INSERT INTO events (tenant_id, environment_id, event_id, event_name, external_customer_id, "timestamp", ingested_at, properties, status)
                    VALUES (${scope.tenantId}, ${scope.environmentId}, 'w3', 'api_call', 'ext-x', ${T0}, ${T0}, '{}', 'pending')`
                  yield* Deferred.succeed(blockerHolds, undefined)
                  yield* Deferred.await(blockerGo)
                })
              ).pipe(asOwner("test: an uncommitted row the write waits for"))
            )
            yield* Deferred.await(blockerHolds)
            const blocked = yield* Effect.fork(write(["w2", "w3"]))
            yield* Effect.sleep("300 millis")
            const tryExclusive = sql.withTransaction(
              Effect.map(sql<{ got: boolean }>`SELECT pg_try_advisory_xact_lock(${INGEST_LOCK_KEY}) AS got`, (rows) => rows[0]!.got)
            ).pipe(asOwner("test: a watermark reader's try"))
            expect(yield* tryExclusive).toBe(false)
            yield* Deferred.succeed(blockerGo, undefined)
            yield* Fiber.join(blocker)
            // w3 was stored by the other transaction first: only w2 is new
            expect((yield* Fiber.join(blocked)).map((r) => r.eventId)).toEqual(["w2"])
            expect(yield* tryExclusive).toBe(true)
          })
        )
      }
    })
  })
})

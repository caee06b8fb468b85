/**
 * The shared EventStore contract on the PostgreSQL backend (PGlite and a PostgreSQL server), and
 * the relational store's one-statement ingest write.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, layer as itLayer } from "@effect/vitest"
import { Chunk, Effect, Layer, Option, Redacted, Stream } from "effect"
import * as Database from "../../src/db/Database.js"
import { EventStore } from "../../src/events/EventStore.js"
import * as PgEventStore from "../../src/events/PgEventStore.js"
import { forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"
import { eventStoreContract, freshScope, processedRow, storedEvent } from "./EventStoreContract.js"

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
  describe(`insertEventsWithProcessed on ${backend} (the ingest write, one statement)`, () => {
    itLayer(PgEventStore.layer.pipe(Layer.provide(databaseFor(backend))), { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("stores events and the processed rows of the events stored now only; the first copy wins, in and across batches", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const insert = store.insertEventsWithProcessed!
          const scope = freshScope()
          const odd = '{"note":"tab\\there, back\\\\slash, new\\nline, quote \\" ü"}'
          const e1 = storedEvent(scope, { eventId: "e1", customerId: "cust_a", status: "processed", propertiesJson: odd })
          const e2 = storedEvent(scope, { eventId: "e2", customerId: "cust_a", status: "error", error: "meter mtr_b: tab\there" })
          const pending = storedEvent(scope, { eventId: "e3" })
          const e5 = storedEvent(scope, { eventId: "e5", customerId: "cust_a", status: "processed", propertiesJson: '{"n":"first"}' })
          const first = [
            processedRow(scope, { eventId: "e1", meterId: "mtr_a", qtyTotal: "0.1", qtyBillable: "0.1" }),
            processedRow(scope, { eventId: "e1", meterId: "mtr_b", qtyTotal: "2.000000000001", qtyBillable: "2.000000000001" }),
            processedRow(scope, { eventId: "e2", meterId: "mtr_a", qtyTotal: "0.2", qtyBillable: "0.2" }),
            processedRow(scope, { eventId: "e5", meterId: "mtr_a", qtyTotal: "5", qtyBillable: "5" }),
            // a second copy of e5's row in the same batch: the first wins
            processedRow(scope, { eventId: "e5", meterId: "mtr_a", qtyTotal: "500", qtyBillable: "500" })
          ]
          const e5again = { ...e5, propertiesJson: '{"n":"second"}' }
          expect([...(yield* insert([e1, e2, pending, e5, e5again], first))].sort()).toEqual(["e1", "e2", "e3", "e5"])

          // re-sent e1 (other quantities) and e2 add nothing; e4 is new
          const e4 = storedEvent(scope, { eventId: "e4", customerId: "cust_a", status: "processed", timestamp: minutes(T0, 1) })
          const second = [
            processedRow(scope, { eventId: "e1", meterId: "mtr_a", qtyTotal: "100", qtyBillable: "100" }),
            processedRow(scope, { eventId: "e2", meterId: "mtr_b", qtyTotal: "7", qtyBillable: "7" }),
            processedRow(scope, { eventId: "e4", meterId: "mtr_a", qtyTotal: "0.3", qtyBillable: "0.3" })
          ]
          expect(yield* insert([{ ...e1, propertiesJson: "{}" }, e2, e4], second)).toEqual(["e4"])
          expect(yield* insert([], [])).toEqual([])

          const groups = Chunk.toReadonlyArray(
            yield* Stream.runCollect(
              store.aggregateBillable({ scope, windowStart: T0, windowEnd: minutes(T0, 60), ingestedBefore: minutes(T0, 24 * 60), meterIds: ["mtr_a", "mtr_b"], pageSize: 100 })
            )
          )
          const total = (meter: string) => groups.filter((g) => g.meterId === meter)
          expect(total("mtr_a").map((g) => [g.quantity, g.eventCount])).toEqual([[exactSum(["0.1", "0.2", "5", "0.3"]), 4]])
          expect(total("mtr_b").map((g) => [g.quantity, g.eventCount])).toEqual([[exactSum(["2.000000000001"]), 1]])

          const page = yield* store.listEvents({ scope, limit: 100 })
          const byId = new Map(page.events.map((e) => [e.eventId, e]))
          expect([...byId.keys()].sort()).toEqual(["e1", "e2", "e3", "e4", "e5"])
          expect(byId.get("e1")!.propertiesJson).toBe(odd)
          expect(byId.get("e5")!.propertiesJson).toBe('{"n":"first"}')
          expect([byId.get("e2")!.status, byId.get("e2")!.error]).toEqual(["error", "meter mtr_b: tab\there"])
          expect([byId.get("e3")!.status, byId.get("e3")!.customerId]).toEqual(["pending", null])
        })
      )
    })
  })
})

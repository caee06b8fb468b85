/**
 * Every statement the ClickHouse store sends answers the same on the server (18.16 here) and on
 * chdb's current engine: one scripted run of every store operation goes through both, each
 * client recording the rows of every query, and the two recordings are compared statement by
 * statement. The contract suite (clickhouse.test.ts) checks what the store returns; this checks
 * what the engines return to it, so a difference the store happens to absorb is seen too.
 *
 * Two differences of representation are known and allowed, and only in this form (the store
 * reads both: `text`/`int` take numbers or strings, decimals go through `normalize`):
 * - 64-bit integers: 18.16 quotes them in JSON (`"3"`); current releases write numbers (`3`),
 *   since `output_format_json_quote_64bit_integers` defaults to 0 there (the HTTP client sends no
 *   settings, so a current server answers like chdb).
 * - `toString(Decimal)`: 18.16 pads to the scale (`"1.500000000000"`), current releases do not (`"1.5"`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, type Scope, Stream } from "effect"
import { fromClient } from "../../src/events/ClickHouseEventStore.js"
import type { EventKeyset } from "../../src/events/EventStore.js"
import { isDecimal, normalize } from "../../src/domain/Decimal.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { makeClient, resolveConnection, type ChClient, type Row } from "../../src/events/clickhouse/Client.js"
import { ClickHouseMigrator } from "../../src/events/clickhouse/Migrator.js"
import { Sql } from "../../src/events/clickhouse/escape.js"
import type { EventStoreShape } from "../../src/events/EventStore.js"
import { chdbClient, chdbVersion, withChdb } from "../support/chdb.js"
import { withClickHouse } from "../support/clickhouse.js"
import { freshScope, processedRow, storedEvent } from "./EventStoreContract.js"

interface Answer {
  readonly query: string
  readonly rows: ReadonlyArray<Row>
}

const recording = (client: ChClient, log: Array<Answer>): ChClient => ({
  ...client,
  query: (operation, query) => client.query(operation, query).pipe(Effect.tap((rows) => Effect.sync(() => log.push({ query: query.text, rows }))))
})

/** The two known representation differences, undone; anything else stays as the engine wrote it. */
const canonical = (value: unknown): unknown =>
  typeof value === "number" && Number.isSafeInteger(value)
    ? String(value)
    : typeof value === "string" && value.includes(".") && isDecimal(value)
      ? normalize(value)
      : value
const canonicalRows = (answer: Answer): ReadonlyArray<string> => {
  const rows = answer.rows.map((row) => JSON.stringify(Object.entries(row).map(([k, v]) => [k, canonical(v)])))
  // Without ORDER BY the engine may return rows in any order.
  return answer.query.includes("ORDER BY") ? rows : [...rows].sort()
}

const T = new Date("2025-05-01T10:00:00.000Z")
const at = (minutes: number) => new Date(T.getTime() + minutes * 60_000)

/** Every store operation, over duplicates, late rows, status updates and decimals at full scale. */
const script = (store: EventStoreShape, scope: TenantScope) =>
  Effect.gen(function* () {
    const events = Array.from({ length: 7 }, (_, i) =>
      storedEvent(scope, {
        eventId: `evt-${i}`,
        timestamp: at(Math.min(i, 5) * 7),
        ingestedAt: at(i * 7 + 1),
        externalCustomerId: i % 2 === 0 ? "ext-even" : "ext-odd",
        eventName: i < 3 ? "early" : "late",
        propertiesJson: `{"n":${i},"s":"tab\\tnew\\nline"}`
      })
    )
    yield* store.insertEvents(events)
    yield* store.insertEvents([{ ...events[0]!, propertiesJson: '{"copy":2}', ingestedAt: at(500) }, events[1]!])
    yield* store.updateEventStatus(scope, [
      { eventId: "evt-1", customerId: "cust_a", status: "processed", error: null },
      { eventId: "evt-2", customerId: null, status: "error", error: "no customer" },
      { eventId: "evt-unknown", customerId: "cust_a", status: "processed", error: null }
    ])
    yield* store.updateEventStatus(scope, [{ eventId: "evt-2", customerId: "cust_b", status: "processed", error: null }])
    let cursor: EventKeyset | undefined
    do {
      cursor = (yield* store.listEvents({ scope, limit: 3, cursor })).nextCursor ?? undefined
    } while (cursor !== undefined)
    yield* store.listEvents({ scope, limit: 100, externalCustomerId: "ext-odd", eventName: "late" })
    yield* store.listEvents({ scope, limit: 100, from: at(7), to: at(21) })

    const quantities = ["0.1", "2.000000000001", "12345678901234567890.123456789012", "0", "7", "0.5"]
    const rows = quantities.map((q, i) =>
      processedRow(scope, {
        eventId: `evt-${i}`,
        meterId: i % 3 === 0 ? "mtr_b" : "mtr_a",
        customerId: i % 2 === 0 ? "cust_a" : "cust_b",
        eventName: i < 3 ? "early" : "late",
        timestamp: at(i * 7),
        ingestedAt: at(i * 7 + 1),
        qtyTotal: q,
        qtyBillable: q
      })
    )
    yield* store.insertProcessed(rows)
    // a re-sent copy (skipped by the pre-check) and a late row first ingested hours later
    yield* store.insertProcessed([
      { ...rows[1]!, ingestedAt: at(400), qtyBillable: "99" },
      processedRow(scope, { eventId: "evt-late", timestamp: at(50), ingestedAt: at(300), qtyTotal: "3.25", qtyBillable: "3.25" })
    ])
    const meterIds = ["mtr_a", "mtr_b"]
    const base = { scope, windowStart: T, windowEnd: at(60), ingestedBefore: at(24 * 60), meterIds, pageSize: 2 }
    yield* Stream.runCollect(store.aggregateBillable(base)).pipe(Effect.map(Chunk.size))
    yield* Stream.runCollect(store.aggregateBillable({ ...base, ingestedAfter: at(100), pageSize: 100 })).pipe(Effect.map(Chunk.size))
    yield* store.windowsWithLateRows({ scope, ingestedAfter: at(100), ingestedBefore: at(24 * 60), windowMinutes: 15, meterIds })
    yield* store.earliestProcessed(scope, meterIds)
    yield* store.earliestProcessed(scope, ["mtr_none"])
  })

/** Migrates a fresh database through `client(database)`, runs the script, records, drops the database. */
const run = (client: (database: string) => Effect.Effect<ChClient, unknown, Scope.Scope>, scope: TenantScope) =>
  Effect.gen(function* () {
    const database = `flexprice_same_${Date.now()}_${process.pid}`
    const bootstrap = yield* client("default")
    const log: Array<Answer> = []
    const bound = yield* client(database)
    try {
      yield* ClickHouseMigrator({ bootstrap, client: bound })
      yield* script(fromClient(recording(bound, log)), scope)
    } finally {
      yield* bootstrap.command("drop", new Sql(`DROP DATABASE IF EXISTS ${database}`))
    }
    return log as ReadonlyArray<Answer>
  }).pipe(Effect.scoped)

withClickHouse((url) => {
  withChdb((path) => {
    describe("ClickHouse engines answer the store alike", () => {
      it.live("every statement of every store operation: 18.16 server and chdb give the same rows", () =>
        Effect.gen(function* () {
          const scope = freshScope()
          const serverLog = yield* run((db) => makeClient(resolveConnection({ url, database: db }), db), scope)
          const chdbLog = yield* run((db) => Effect.sync(() => chdbClient(path, db)), scope)
          const versions = [
            (yield* makeClient(resolveConnection({ url }), "default").pipe(
              Effect.flatMap((c) => c.query("v", new Sql("SELECT version() AS v"))),
              Effect.scoped
            ))[0]!["v"],
            yield* Effect.promise(() => chdbVersion(path))
          ]
          expect(versions[0]).not.toEqual(versions[1])
          // aggregateBillable runs its row count beside the first page, so the two recordings are
          // paired by statement text (a stable sort keeps repeats of one statement in order)
          const byQuery = (log: ReadonlyArray<Answer>) => [...log].sort((a, b) => a.query < b.query ? -1 : a.query > b.query ? 1 : 0)
          const server = byQuery(serverLog)
          const chdb = byQuery(chdbLog)
          expect(chdb.map((a) => a.query)).toEqual(server.map((a) => a.query))
          expect(server.length).toBeGreaterThan(15)
          // the script reaches rows in every kind of read (not a comparison of empty answers)
          expect(server.filter((a) => a.rows.length > 0).length).toBeGreaterThan(10)
          server.forEach((answer, i) => {
            expect(canonicalRows(chdb[i]!), `${versions.join(" vs ")}: ${answer.query}`).toEqual(canonicalRows(answer))
          })
        })
      )
    })
  })
})

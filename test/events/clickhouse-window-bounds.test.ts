/**
 * The window bounds of the ClickHouse reads (clickhouse/Aggregate.ts), on chdb's in-process engine
 * (a current release) and on the server (18.16 here): ends on whole seconds are read by the
 * `DateTime` column alone, other ends by the milliseconds too; either way the window is
 * [start, end) to the millisecond, for the plain read with its audit and for the exact path.
 * Expected rows come from the instants themselves (plain comparisons on epoch milliseconds).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Chunk, Effect, Exit, Logger, LogLevel, Option, Scope, Stream } from "effect"
import { auditSql, makeAggregate, pageSql } from "../../src/events/clickhouse/Aggregate.js"
import { type ChClient, makeClient, resolveConnection } from "../../src/events/clickhouse/Client.js"
import { encodeProcessedRow, PROCESSED_COLUMNS } from "../../src/events/clickhouse/FirstCopy.js"
import { ClickHouseMigrator } from "../../src/events/clickhouse/Migrator.js"
import { Sql } from "../../src/events/clickhouse/escape.js"
import { EventStoreError, type AggregateQuery, type ProcessedEvent } from "../../src/events/EventStore.js"
import { chdbClient, withChdb } from "../support/chdb.js"
import { withClickHouse } from "../support/clickhouse.js"
import { freshScope } from "./aggregateModel.js"

const attempt = <A>(operation: string, f: () => A): Effect.Effect<A, EventStoreError> =>
  Effect.try({ try: f, catch: (cause) => new EventStoreError({ backend: "clickhouse", operation, cause }) })


/** Rows as ingest encodes them (FirstCopy.ts): `timestamp` is the whole-second floor of `timestamp_ms`. */
const writeRows = (client: ChClient, rows: ReadonlyArray<ProcessedEvent>) =>
  client.insertTsv(
    "test",
    "events_processed",
    PROCESSED_COLUMNS,
    rows.map(encodeProcessedRow).join("")
  )

const T = new Date("2025-05-01T10:00:00.000Z")
const at = (ms: number) => new Date(T.getTime() + ms)
const INGESTED = at(2 * 3_600_000)

type Connect = (database: string) => Effect.Effect<ChClient, EventStoreError, Scope.Scope>

const suite = (label: string, connect: Connect) =>
  describe(`ClickHouse window bounds (${label})`, () => {
    const database = `flexprice_winbounds_${process.pid}_${Date.now()}`
    const scopeOfFile = Effect.runSync(Scope.make())
    let bootstrap = undefined as unknown as ChClient
    let client = undefined as unknown as ChClient
    const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(Logger.withMinimumLogLevel(e, LogLevel.Error))

    beforeAll(
      () =>
        run(
          Effect.gen(function* () {
            bootstrap = yield* connect("default")
            client = yield* connect(database)
            yield* ClickHouseMigrator({ bootstrap, client })
          }).pipe(Scope.extend(scopeOfFile))
        ),
      120_000
    )
    afterAll(() =>
      run(bootstrap.command("drop", new Sql(`DROP DATABASE IF EXISTS ${database}`)).pipe(Effect.ensuring(Scope.close(scopeOfFile, Exit.void))))
    )

    it("a window is [start, end) to the millisecond, whether its ends are whole seconds (DateTime only) or not", () =>
      run(
        Effect.gen(function* () {
          const s = freshScope()
          // one customer per row, so the groups say which rows a read took; `start` (.000) is in
          // and `endHalf` (the end's second at .500) is out of the first two windows
          const instants = { before: -1, start: 0, quarter: 250, endMinus1: 59_999, end: 60_000, endQuarter: 60_250, endHalf: 60_500 }
          const rows = Object.entries(instants).map(
            ([name, ms]): ProcessedEvent => ({
              tenantId: s.tenantId, environmentId: s.environmentId, eventId: `evt_${name}`, meterId: "mtr_a", customerId: `cus_${name}`,
              eventName: "api_call", timestamp: at(ms), ingestedAt: INGESTED, qtyTotal: "1", qtyBillable: "1"
            })
          )
          yield* writeRows(client, rows)
          const reads = makeAggregate(client, attempt)
          const windows = [
            { start: 0, end: 60_000, wholeSeconds: true },
            { start: 0, end: 60_500, wholeSeconds: false },
            { start: 250, end: 60_250, wholeSeconds: false }
          ]
          for (const w of windows) {
            const q: AggregateQuery = {
              scope: s, windowStart: at(w.start), windowEnd: at(w.end), ingestedBefore: at(3 * 3_600_000), meterIds: ["mtr_a"], pageSize: 100
            }
            const expected = Object.entries(instants)
              .filter(([, ms]) => ms >= w.start && ms < w.end)
              .map(([name]) => `cus_${name}`)
              .sort()
            const customers = (groups: Chunk.Chunk<{ readonly customerId: string }>) => Chunk.toReadonlyArray(groups).map((g) => g.customerId)
            expect(customers(yield* Stream.runCollect(reads.aggregateBillable(q)))).toEqual(expected)
            expect(customers(yield* Stream.runCollect(reads.readPath("exact", q)))).toEqual(expected)
            expect(yield* reads.audit(q)).toEqual({ rows: expected.length, pairs: expected.length })
            // whole-second windows do not read the millisecond column; the others need it
            expect(pageSql("plain", q, Option.none()).text.includes("timestamp_ms")).toBe(!w.wholeSeconds)
            expect(auditSql(q).text.includes("timestamp_ms")).toBe(!w.wholeSeconds)
          }
        })
      ))
  })

withChdb((path) => suite("chdb", (database) => Effect.succeed(chdbClient(path, database))))
withClickHouse((url) => suite("server", (database) => Effect.suspend(() => makeClient(resolveConnection({ url, database }), database))))

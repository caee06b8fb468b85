/**
 * The ClickHouse aggregation statements (`clickhouse/Aggregate.ts`: window condition, audit,
 * plain and exact pages, keyset; the store's late-window and earliest-row reads) run on chdb's
 * in-process engine (a current release) and on the server (18.16 here) over generated rows, and
 * every answer is compared with the oracle (aggregateModel.ts). Rows are written straight into `events_processed` — duplicates included,
 * which the ingest check would refuse — so the exact path is exercised by the data, not by hand;
 * `processed_arrivals` gets what ingest would have written (first copies: see `arrivalsOf`).
 * One database per engine, one fresh scope per generated case: fast enough for the mutation run
 * (vitest.mutation-sql.config.ts), which re-runs these tests for every mutant of those modules —
 * on the server only: chdb's engine does not survive Stryker's re-runs in one worker thread.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Chunk, Deferred, Effect, Exit, HashMap, Logger, LogLevel, Metric, Option, Scope, Stream } from "effect"
import fc from "fast-check"
import { type EnvironmentId, type TenantId, TenantScope } from "../../src/domain/Ids.js"
import { fromClient } from "../../src/events/ClickHouseEventStore.js"
import { makeAggregate } from "../../src/events/clickhouse/Aggregate.js"
import { type ChClient, makeClient, resolveConnection, type Row } from "../../src/events/clickhouse/Client.js"
import { encodeProcessedRow, PROCESSED_COLUMNS } from "../../src/events/clickhouse/FirstCopy.js"
import { ClickHouseMigrator } from "../../src/events/clickhouse/Migrator.js"
import { epochMs, Sql, tsvLine, tsvString, tsvUInt } from "../../src/events/clickhouse/escape.js"
import { EventStoreError, type AggregateGroup, type AggregateQuery, type EventStoreShape, type ProcessedEvent } from "../../src/events/EventStore.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { runs } from "../support/arbitraries.js"
import { chdbClient, withChdb } from "../support/chdb.js"
import { withClickHouse } from "../support/clickhouse.js"
import { recordingTracer } from "../support/recordingTracer.js"
import {
  expectedEarliest,
  expectedGroups,
  expectedLateWindows,
  ingestedAt,
  lateReadArb,
  METERS,
  pairsArb,
  queryOf,
  PROPERTY_TIMEOUT,
  freshScope as scope,
  readArb,
  rowsOf
} from "./aggregateModel.js"


const attempt = <A>(operation: string, f: () => A): Effect.Effect<A, EventStoreError> =>
  Effect.try({ try: f, catch: (cause) => new EventStoreError({ backend: "clickhouse", operation, cause }) })


/**
 * Arrivals (`processed_arrivals`, read by the late-window statement) as ingest writes them: one
 * per row it writes, and it writes a pair's first-ingested copy only (a later copy at another
 * instant is refused by the claim check, clickhouse/FirstCopy.ts; these pairs keep one copy per second).
 */
const arrivalsOf = (rows: ReadonlyArray<ProcessedEvent>): ReadonlyArray<ProcessedEvent> => {
  const first = new Map<string, ProcessedEvent>()
  for (const r of rows) {
    const key = `${r.eventId}\u0000${r.meterId}`
    const seen = first.get(key)
    if (seen === undefined || r.ingestedAt.getTime() < seen.ingestedAt.getTime()) first.set(key, r)
  }
  return [...first.values()]
}

/** Rows as they are, copies and all (no ingest check), with the arrivals ingest would have written. */
const writeRaw = (client: ChClient, rows: ReadonlyArray<ProcessedEvent>) =>
  rows.length === 0
    ? Effect.void
    : Effect.zipRight(
      client.insertTsv(
        "test",
        "processed_arrivals",
        ["tenant_id", "environment_id", "meter_id", "ingested_at_ms", "event_id", "timestamp_ms"],
        arrivalsOf(rows)
          .map((r) =>
            tsvLine([
              tsvString(r.tenantId), tsvString(r.environmentId), tsvString(r.meterId), tsvUInt(epochMs(r.ingestedAt)),
              tsvString(r.eventId), tsvUInt(epochMs(r.timestamp))
            ])
          )
          .join("")
      ),
      client.insertTsv(
        "test",
        "events_processed",
        PROCESSED_COLUMNS,
        rows.map(encodeProcessedRow).join("")
      ))

const collect = (s: Stream.Stream<AggregateGroup, EventStoreError>) => Effect.map(Stream.runCollect(s), Chunk.toReadonlyArray)

const duplicateReads = Effect.map(Metric.value(Metrics.eventStoreDuplicateReadsTotal), (s) => s.count)

/** Rows of the read's window and meters, and their distinct (event, meter) pairs: what the audit counts. */
const auditOracle = (rows: ReadonlyArray<ProcessedEvent>, q: AggregateQuery) => {
  const inWindow = rows.filter(
    (r) => q.meterIds.includes(r.meterId) && r.timestamp.getTime() >= q.windowStart.getTime() && r.timestamp.getTime() < q.windowEnd.getTime()
  )
  return { rows: inWindow.length, pairs: new Set(inWindow.map((r) => `${r.eventId}\u0000${r.meterId}`)).size }
}

/** Clients of one engine: `client(db)` bound to a database ("default": the engine's own), closed with the scope. */
type Connect = (database: string) => Effect.Effect<ChClient, EventStoreError, Scope.Scope>

const aggregateSqlSuite = (label: string, connect: Connect) =>
  describe(`ClickHouse aggregation SQL against the oracle (${label})`, () => {
    const database = `flexprice_aggsql_${process.pid}_${Date.now()}`
    const scopeOfFile = Effect.runSync(Scope.make())
    // filled in by beforeAll; the tests run after it
    let client = undefined as unknown as ChClient
    let reads = undefined as unknown as ReturnType<typeof makeAggregate>
    let store = undefined as unknown as EventStoreShape
    // the exact path logs a warning per read; the metric is what these tests check
    const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(Logger.withMinimumLogLevel(e, LogLevel.Error))

    beforeAll(
      () =>
        run(
          Effect.gen(function* () {
            const bootstrap = yield* connect("default")
            client = yield* connect(database)
            yield* ClickHouseMigrator({ bootstrap, client })
            reads = makeAggregate(client, attempt)
            store = fromClient(client)
          }).pipe(Scope.extend(scopeOfFile))
        ),
      120_000
    )
    afterAll(() =>
      run(client.command("drop", new Sql(`DROP DATABASE IF EXISTS ${database}`)).pipe(Effect.ensuring(Scope.close(scopeOfFile, Exit.void))))
    )

    it("without duplicates: the plain read returns the oracle's groups in key order, page after page", () =>
      fc.assert(
        fc.asyncProperty(pairsArb({ duplicates: false }), fc.array(readArb, { minLength: 1, maxLength: 4 }), (pairs, readSpecs) =>
          run(
            Effect.gen(function* () {
              const s = scope()
              const rows = rowsOf(s, pairs)
              yield* writeRaw(client, rows)
              const before = yield* duplicateReads
              for (const r of readSpecs) {
                const q = queryOf(s, r)
                expect(yield* collect(reads.aggregateBillable(q))).toEqual(expectedGroups(rows, q))
                expect(yield* collect(reads.readPath("exact", q))).toEqual(expectedGroups(rows, q))
                const audit = auditOracle(rows, q)
                expect(yield* reads.audit(q)).toEqual(audit)
              }
              expect(yield* duplicateReads).toBe(before)
            })
          )
        ),
        runs(40)
      ), PROPERTY_TIMEOUT)

    it("with duplicate rows: the audit sees them and the read counts each pair's first-ingested copy", () =>
      fc.assert(
        fc.asyncProperty(pairsArb({ duplicates: true }), fc.array(readArb, { minLength: 1, maxLength: 4 }), (pairs, readSpecs) =>
          run(
            Effect.gen(function* () {
              const s = scope()
              const rows = rowsOf(s, pairs)
              yield* writeRaw(client, rows)
              for (const r of readSpecs) {
                const q = queryOf(s, r)
                const audit = auditOracle(rows, q)
                expect(yield* reads.audit(q)).toEqual(audit)
                const before = yield* duplicateReads
                expect(yield* collect(reads.aggregateBillable(q))).toEqual(expectedGroups(rows, q))
                expect(yield* duplicateReads).toBe(before + (audit.rows === audit.pairs ? 0 : 1))
              }
            })
          )
        ),
        runs(40)
      ), PROPERTY_TIMEOUT)

    it("a duplicate makes the plain path wrong, so the read must not take it", () =>
      run(
        Effect.gen(function* () {
          const s = scope()
          const q = queryOf(s, { startOffset: 0, endOffset: 3_600_000, after: undefined, before: 8, meters: [0], pageSize: 10 })
          const first: ProcessedEvent = {
            tenantId: s.tenantId, environmentId: s.environmentId, eventId: "evt_1", meterId: METERS[0], customerId: "cus_a", eventName: "api_call",
            timestamp: q.windowStart, ingestedAt: ingestedAt(1), qtyTotal: "1.5", qtyBillable: "1.5"
          }
          // another second: a copy in the same second could be collapsed into the first by the engine
          const second = { ...first, timestamp: new Date(q.windowStart.getTime() + 1000), ingestedAt: ingestedAt(2), qtyBillable: "7", qtyTotal: "7" }
          yield* writeRaw(client, [first, second])
          expect(yield* collect(reads.readPath("plain", q))).toEqual([
            { customerId: "cus_a", meterId: METERS[0], eventName: "api_call", quantity: "8.5", eventCount: 2 }
          ])
          expect(yield* collect(reads.aggregateBillable(q))).toEqual([
            { customerId: "cus_a", meterId: METERS[0], eventName: "api_call", quantity: "1.5", eventCount: 1 }
          ])
        })
      ))

    it("refuses a page size that is not a positive integer, and reads nothing for no meters", () =>
      run(
        Effect.gen(function* () {
          const s = scope()
          const q = queryOf(s, { startOffset: 0, endOffset: 3_600_000, after: undefined, before: 8, meters: [0], pageSize: 1 })
          for (const pageSize of [0, -1, 1.5, Number.NaN]) {
            const error = yield* Effect.flip(collect(reads.aggregateBillable({ ...q, pageSize })))
            expect(error).toBeInstanceOf(EventStoreError)
            expect(error.operation).toBe("aggregateBillable")
            expect(String((error.cause as Error).message)).toContain(`pageSize must be a positive integer, got ${pageSize}`)
          }
          // no meter: no statement at all (the client would refuse `IN ()`)
          const refusing = makeAggregate({ ...client, query: () => Effect.die("no query expected") }, attempt)
          expect(yield* collect(refusing.aggregateBillable({ ...q, meterIds: [] }))).toEqual([])
          expect(yield* collect(reads.aggregateBillable({ ...q, pageSize: 1 }))).toEqual([])
        })
      ))

    it("late windows and the earliest row match the oracle (first copies, any meter subset, any window size)", () =>
      fc.assert(
        fc.asyncProperty(
          pairsArb({ duplicates: true }),
          lateReadArb,
          (pairs, r) =>
            run(
              Effect.gen(function* () {
                const s = scope()
                const rows = rowsOf(s, pairs)
                yield* writeRaw(client, rows)
                const meterIds = r.meters.map((m) => METERS[m]!)
                const q = { scope: s, ingestedAfter: ingestedAt(r.after), ingestedBefore: ingestedAt(r.before), windowMinutes: r.windowMinutes, meterIds }
                expect((yield* store.windowsWithLateRows(q)).map((d) => d.getTime())).toEqual(expectedLateWindows(rows, q, false))
                const earliest = yield* store.earliestProcessed(s, meterIds)
                expect(Option.getOrUndefined(Option.map(earliest, (d) => d.getTime()))).toBe(expectedEarliest(rows, meterIds, false))
              })
            )
        ),
        runs(40)
      ), PROPERTY_TIMEOUT)

    it("late windows: no meters reads nothing; a window size that is not a positive integer is refused", () =>
      run(
        Effect.gen(function* () {
          const s = scope()
          const q = { scope: s, ingestedAfter: ingestedAt(0), ingestedBefore: ingestedAt(8), windowMinutes: 60, meterIds: [METERS[0]] }
          const refusing = fromClient({ ...client, query: () => Effect.die("no query expected") })
          expect(yield* refusing.windowsWithLateRows({ ...q, meterIds: [] })).toEqual([])
          expect(Option.isNone(yield* refusing.earliestProcessed(s, []))).toBe(true)
          expect(Option.isNone(yield* store.earliestProcessed(s, [METERS[0]]))).toBe(true)
          for (const windowMinutes of [0, -5, 2.5]) {
            const error = yield* Effect.flip(store.windowsWithLateRows({ ...q, windowMinutes }))
            expect(error.operation).toBe("windowsWithLateRows")
            expect(String((error.cause as Error).message)).toContain(`windowMinutes must be a positive integer, got ${windowMinutes}`)
          }
        })
      ))
  })

/**
 * What operators see, checked without an engine (a scripted client): the operation every statement
 * and every decoding failure is named by (errors, client metrics), and the warning of the exact path.
 */
describe("ClickHouse aggregation reads: operation names and the exact-path warning (scripted client)", () => {
  const s = new TenantScope({ tenantId: "tnt_ops" as TenantId, environmentId: "env_ops" as EnvironmentId })
  const q = queryOf(s, { startOffset: 0, endOffset: 3_600_000, after: undefined, before: 8, meters: [0], pageSize: 2 })
  const group = { c: "cus_a", m: METERS[0], n: "api_call", quantity: "1.50", event_count: "2" }
  /** Answers the audit with `audit` and every page with `page`; records each statement's operation. */
  const scripted = (answers: { readonly audit: ReadonlyArray<Row>; readonly page: ReadonlyArray<Row> }, ops: Array<string> = []): ChClient => ({
    connection: { url: "scripted:", database: "x", username: undefined, password: undefined, requestTimeoutMs: 1 },
    query: (operation, query) =>
      Effect.sync(() => {
        ops.push(operation)
        return query.text.includes("uniqExact") ? answers.audit : answers.page
      }),
    command: () => Effect.die("no command expected"),
    insertTsv: () => Effect.die("no insert expected"),
    ping: () => Effect.void
  })
  const runQuiet = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(Logger.withMinimumLogLevel(e, LogLevel.Error))

  it("names the audit and the page statements, and decoding failures after the read", async () => {
    const ops: Array<string> = []
    const reads = makeAggregate(scripted({ audit: [{ row_count: "1", pair_count: "1" }], page: [group] }, ops), attempt)
    expect(await runQuiet(collect(reads.aggregateBillable(q)))).toEqual([
      { customerId: "cus_a", meterId: METERS[0], eventName: "api_call", quantity: "1.5", eventCount: 2 }
    ])
    expect([...ops].sort()).toEqual(["aggregateBillable", "aggregateBillable.audit"])
    // an audit without a row reads as an empty window (rows = pairs = 0)
    expect(await runQuiet(makeAggregate(scripted({ audit: [], page: [] }), attempt).audit(q))).toEqual({ rows: 0, pairs: 0 })
    for (const answers of [
      { audit: [{ row_count: "x", pair_count: "1" }], page: [group] },
      { audit: [{ row_count: "1", pair_count: "1" }], page: [{ ...group, c: null }] },
      { audit: [{ row_count: "1", pair_count: "1" }], page: [{ ...group, quantity: "not a number" }] }
    ]) {
      const error = await runQuiet(Effect.flip(collect(makeAggregate(scripted(answers), attempt).aggregateBillable(q))))
      expect(error.operation).toBe("aggregateBillable")
    }
    // an instant no DateTime holds is refused while building the statements, by the same operation
    const bad = await runQuiet(Effect.flip(collect(reads.readPath("exact", { ...q, windowStart: new Date(-1) }))))
    expect(bad.operation).toBe("aggregateBillable")
    expect(await runQuiet(Effect.flip(reads.audit({ ...q, windowStart: new Date(-1) })))).toMatchObject({ operation: "aggregateBillable" })
  })

  it("a duplicate found by the audit is logged as a warning with the window and both counts", async () => {
    const logs: Array<{ level: string; message: unknown; annotations: Record<string, unknown> }> = []
    const logger = Logger.make(({ annotations, logLevel, message }) =>
      logs.push({ level: logLevel.label, message, annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
    )
    const reads = makeAggregate(scripted({ audit: [{ row_count: "3", pair_count: "2" }], page: [group] }), attempt)
    await Effect.runPromise(collect(reads.aggregateBillable(q)).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))))
    expect(logs).toEqual([
      {
        level: "WARN",
        message: ["duplicate processed rows in a window: read by the exact path"],
        annotations: { tenant_id: "tnt_ops", window_start: q.windowStart.toISOString(), rows: 3, distinct_pairs: 2 }
      }
    ])
  })

  it("spans: one per statement, named by the read, each page with the path it was read by", async () => {
    const { tracer, recorded } = await Effect.runPromise(recordingTracer)
    /** The spans `e` opened, as "name path" (path "-" when the span has none), sorted: the audit and the first page run side by side. */
    const traced = async <A, E>(e: Effect.Effect<A, E>): Promise<ReadonlyArray<string>> => {
      recorded.length = 0
      await runQuiet(Effect.withTracer(e, tracer))
      return recorded.map((span) => `${span.name} ${String(span.attributes.get("path") ?? "-")}`).sort()
    }
    /** A full first page (page size 1), then an empty keyset page: every read takes two pages. */
    const paged = (audit: Row): ChClient => ({
      ...scripted({ audit: [audit], page: [group] }),
      query: (_operation, query) =>
        Effect.sync(() => (query.text.includes("uniqExact") ? [audit] : query.text.includes("HAVING") ? [] : [group]))
    })
    const one = { ...q, pageSize: 1 }
    const page = "EventStore.aggregateBillable.page"
    const audit = "EventStore.aggregateBillable.audit -"
    const clean = makeAggregate(paged({ row_count: "1", pair_count: "1" }), attempt)
    expect(await traced(collect(clean.aggregateBillable(one)))).toEqual([audit, `${page} plain`, `${page} plain`])
    const duplicated = makeAggregate(paged({ row_count: "3", pair_count: "2" }), attempt)
    // the first plain page is read beside the audit, then the window again by the exact path
    expect(await traced(collect(duplicated.aggregateBillable(one)))).toEqual([audit, `${page} exact`, `${page} exact`, `${page} plain`])
    expect(await traced(collect(clean.readPath("exact", one)))).toEqual([`${page} exact`, `${page} exact`])
    const store = fromClient(scripted({ audit: [], page: [{ window_start: "1740823200000", earliest: "1740823200001", n: "1" }] }))
    const late = { scope: s, ingestedAfter: ingestedAt(0), ingestedBefore: ingestedAt(8), windowMinutes: 60, meterIds: [METERS[0]] }
    expect(await traced(store.windowsWithLateRows(late))).toEqual(["EventStore.windowsWithLateRows -"])
    expect(await traced(store.earliestProcessed(s, [METERS[0]]))).toEqual(["EventStore.earliestProcessed -"])
  })

  it("the audit runs beside the first page, not before it", async () => {
    // the audit's answer waits until the first page's statement has started: one after the other, the read would never end
    const pageStarted = Effect.runSync(Deferred.make<void>())
    const client: ChClient = {
      ...scripted({ audit: [], page: [] }),
      query: (_operation, query) =>
        query.text.includes("uniqExact")
          ? Effect.as(Deferred.await(pageStarted), [{ row_count: "1", pair_count: "1" }])
          : Effect.as(Deferred.succeed(pageStarted, undefined), [group])
    }
    const read = collect(makeAggregate(client, attempt).aggregateBillable(q)).pipe(
      Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the audit waited for the first page") })
    )
    expect(await runQuiet(read)).toEqual([{ customerId: "cus_a", meterId: METERS[0], eventName: "api_call", quantity: "1.5", eventCount: 2 }])
  })

  it("names the late-window and earliest-row statements and their decoding failures", async () => {
    const ops: Array<string> = []
    const late = { scope: s, ingestedAfter: ingestedAt(0), ingestedBefore: ingestedAt(8), windowMinutes: 60, meterIds: [METERS[0]] }
    const store = fromClient(scripted({ audit: [], page: [{ window_start: "1740823200000", earliest: "1740823200001", n: "1" }] }, ops))
    expect((await runQuiet(store.windowsWithLateRows(late))).map((d) => d.getTime())).toEqual([1740823200000])
    expect(Option.map(await runQuiet(store.earliestProcessed(s, [METERS[0]])), (d) => d.getTime())).toEqual(Option.some(1740823200001))
    expect(ops).toEqual(["windowsWithLateRows", "earliestProcessed"])
    // no row at all: nothing processed
    expect(Option.isNone(await runQuiet(fromClient(scripted({ audit: [], page: [] })).earliestProcessed(s, [METERS[0]])))).toBe(true)
    const broken = fromClient(scripted({ audit: [], page: [{ window_start: "x", earliest: "x", n: "1" }] }))
    expect((await runQuiet(Effect.flip(broken.windowsWithLateRows(late)))).operation).toBe("windowsWithLateRows")
    expect((await runQuiet(Effect.flip(broken.earliestProcessed(s, [METERS[0]])))).operation).toBe("earliestProcessed")
  })
})

withChdb((path) => aggregateSqlSuite("chdb", (database) => Effect.succeed(chdbClient(path, database))))
withClickHouse((url) => aggregateSqlSuite("server", (database) => Effect.suspend(() => makeClient(resolveConnection({ url, database }), database))))

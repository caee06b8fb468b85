/**
 * The PostgreSQL aggregation statements (PgEventStore: the window's groups read in one query and
 * cut into pages, the keyset pages of a window with more groups than fit in memory, late windows,
 * the earliest row) run on one PGlite per file over generated rows, and every answer is compared
 * with the oracle (aggregateModel.ts). A second store with a tiny in-memory bound takes the keyset
 * path on the same rows. Fast enough for the mutation run (vitest.mutation-sql.config.ts).
 */
import { PgClient } from "@effect/sql-pg"
import { describe, expect, layer } from "@effect/vitest"
import { Chunk, Effect, Logger, LogLevel, Option, Stream } from "effect"
import fc from "fast-check"
import * as Database from "../../src/db/Database.js"
import type { AggregateGroup, AggregateQuery, EventStoreError, EventStoreShape } from "../../src/events/EventStore.js"
import * as PgEventStore from "../../src/events/PgEventStore.js"
import { runs } from "../support/arbitraries.js"
import { freshDataDir } from "../support/app.js"
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
  rowsOf,
  sortGroups
} from "./aggregateModel.js"


/** The stream's chunks: the window pass ledgers one page per chunk. */
const pages = (s: Stream.Stream<AggregateGroup, EventStoreError>) =>
  Effect.map(Stream.runCollect(Stream.chunks(s)), (c) => Chunk.toReadonlyArray(c).map(Chunk.toReadonlyArray))

/**
 * Every page holds `pageSize` groups except the last, which holds 1..pageSize — or, on the keyset
 * path, 0 after a full page: it learns that the groups ended only from an empty next page.
 */
const expectPaged = (got: ReadonlyArray<ReadonlyArray<AggregateGroup>>, q: AggregateQuery, emptyLastAfterFull: boolean) => {
  got.forEach((page, i) => {
    if (i < got.length - 1) expect(page.length).toBe(q.pageSize)
    else {
      expect(page.length).toBeGreaterThan(emptyLastAfterFull && i > 0 ? -1 : 0)
      expect(page.length).toBeLessThanOrEqual(q.pageSize)
    }
  })
}

describe("PostgreSQL aggregation SQL against the oracle (PGlite)", () => {
  layer(Database.layerFrom({ url: Option.none(), dataDir: freshDataDir() }), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    /** Runs a generated case's effect with the file's database. */
    const runner = Effect.map(Effect.context<PgClient.PgClient>(), (ctx) => <A, E>(e: Effect.Effect<A, E, PgClient.PgClient>) =>
      Effect.runPromise(e.pipe(Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.Error)))
    )
    const stores = Effect.all({ inMemory: PgEventStore.make, keyset: PgEventStore.makeWith({ inMemoryGroups: 2 }) })

    it.effect("window reads: in-memory pages and keyset pages both return the oracle's groups", () =>
      Effect.gen(function* () {
        const run = yield* runner
        const { inMemory, keyset } = yield* stores
        yield* Effect.promise(() =>
          fc.assert(
            // up to 12 pairs: the keyset store reads a page per query, pages of 1 group included
            fc.asyncProperty(pairsArb({ duplicates: false, maxPairs: 12 }), fc.array(readArb, { minLength: 1, maxLength: 3 }), (pairs, readSpecs) =>
              run(
                Effect.gen(function* () {
                  const s = scope()
                  const rows = rowsOf(s, pairs)
                  yield* inMemory.insertProcessed(rows)
                  for (const r of readSpecs) {
                    const q = queryOf(s, r)
                    const expected = expectedGroups(rows, q)
                    for (const store of [inMemory, keyset] satisfies ReadonlyArray<EventStoreShape>) {
                      const got = yield* pages(store.aggregateBillable(q))
                      expectPaged(got, q, store === keyset)
                      expect(sortGroups(got.flat())).toEqual(expected)
                    }
                  }
                })
              )
            ),
            runs(30)
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("late windows and the earliest row match the oracle (non-zero rows, any meter subset, any window size)", () =>
      Effect.gen(function* () {
        const run = yield* runner
        const { inMemory: store } = yield* stores
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              pairsArb({ duplicates: false }),
              lateReadArb,
              (pairs, r) =>
                run(
                  Effect.gen(function* () {
                    const s = scope()
                    const rows = rowsOf(s, pairs)
                    yield* store.insertProcessed(rows)
                    const meterIds = r.meters.map((m) => METERS[m]!)
                    const q = { scope: s, ingestedAfter: ingestedAt(r.after), ingestedBefore: ingestedAt(r.before), windowMinutes: r.windowMinutes, meterIds }
                    expect((yield* store.windowsWithLateRows(q)).map((d) => d.getTime())).toEqual(expectedLateWindows(rows, q, true))
                    const earliest = yield* store.earliestProcessed(s, meterIds)
                    expect(Option.getOrUndefined(Option.map(earliest, (d) => d.getTime()))).toBe(expectedEarliest(rows, meterIds, true))
                  })
                )
            ),
            runs(30)
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("a window that fits in memory is read by one statement, a larger one by keyset pages (their spans)", () =>
      Effect.gen(function* () {
        const { inMemory, keyset } = yield* stores
        const { tracer, recorded } = yield* recordingTracer
        /** The read's pages and its window-read spans as "name backend" (the SQL client's own spans left out). */
        const traced = (store: EventStoreShape, q: AggregateQuery) =>
          Effect.gen(function* () {
            recorded.length = 0
            const got = yield* Effect.withTracer(pages(store.aggregateBillable(q)), tracer)
            const spans = recorded.filter((span) => !span.name.startsWith("sql.")).map((span) => `${span.name} ${String(span.attributes.get("backend") ?? "-")}`)
            return { got, spans }
          })
        const span = "EventStore.aggregatePage postgres"
        // one group per customer on one meter: 2 groups (the keyset store's in-memory bound) and 3
        const groupsOf = (n: number) => {
          const s = scope()
          const rows = rowsOf(s, Array.from({ length: n }, (_, customer) => ({ meter: 0, copies: [{ customer, name: 0, tsOffset: 0, ingest: 0, qty: "1" }] })))
          return { rows, q: queryOf(s, { startOffset: 0, endOffset: 3_600_000, after: undefined, before: 8, meters: [0], pageSize: 2 }) }
        }
        const two = groupsOf(2)
        const three = groupsOf(3)
        yield* inMemory.insertProcessed([...two.rows, ...three.rows])
        const expectedTwo = expectedGroups(two.rows, two.q)
        const expectedThree = expectedGroups(three.rows, three.q)
        expect(expectedTwo).toHaveLength(2)
        expect(expectedThree).toHaveLength(3)
        // as many groups as the bound: in memory, one statement, one page and no empty one after it
        for (const store of [inMemory, keyset]) {
          const { got, spans } = yield* traced(store, two.q)
          expect(got.map((p) => sortGroups(p))).toEqual([expectedTwo])
          expect(spans).toEqual([span])
        }
        // one more: in memory under the default bound; past the keyset store's, its in-memory statement
        // (which saw 3 groups) then keyset pages of 2 and 1 (short: the last)
        for (const [store, spans] of [[inMemory, [span]], [keyset, [span, span, span]]] as const) {
          const read = yield* traced(store, three.q)
          expect(read.got.map((p) => p.length)).toEqual([2, 1])
          expect(sortGroups(read.got.flat())).toEqual(expectedThree)
          expect(read.spans).toEqual(spans)
        }
      })
    )

    it.effect("a page size that is not a positive integer is refused; a failing statement names its operation", () =>
      Effect.gen(function* () {
        const { inMemory: store } = yield* stores
        const s = scope()
        const q = queryOf(s, { startOffset: 0, endOffset: 3_600_000, after: undefined, before: 8, meters: [0], pageSize: 1 })
        yield* store.insertProcessed(rowsOf(s, [{ meter: 0, copies: [{ customer: 0, name: 0, tsOffset: 0, ingest: 0, qty: "1" }] }]))
        for (const pageSize of [0, -1, 1.5, Number.NaN]) {
          const error = yield* Effect.flip(Stream.runCollect(store.aggregateBillable({ ...q, pageSize })))
          expect(error.operation).toBe("aggregateBillable")
          expect(String((error.cause as Error).message)).toContain(`pageSize must be a positive integer, got ${pageSize}`)
        }
        expect(Chunk.toReadonlyArray(yield* Stream.runCollect(store.aggregateBillable(q)))).toHaveLength(1)
        // PostgreSQL refuses a NUL in text: each statement fails, and says which one it was
        const nul = ["mtr_\u0000"]
        expect((yield* Effect.flip(Stream.runCollect(store.aggregateBillable({ ...q, meterIds: nul })))).operation).toBe("aggregateBillable")
        const late = { scope: s, ingestedAfter: ingestedAt(-1), ingestedBefore: ingestedAt(8), windowMinutes: 60, meterIds: nul }
        expect((yield* Effect.flip(store.windowsWithLateRows(late))).operation).toBe("windowsWithLateRows")
        expect((yield* Effect.flip(store.earliestProcessed(s, nul))).operation).toBe("earliestProcessed")
      })
    )

    it.effect("no meters: nothing is read", () =>
      Effect.gen(function* () {
        const { inMemory: store } = yield* stores
        const s = scope()
        const q = queryOf(s, { startOffset: 0, endOffset: 3_600_000, after: undefined, before: 8, meters: [0], pageSize: 2 })
        yield* store.insertProcessed(rowsOf(s, [{ meter: 0, copies: [{ customer: 0, name: 0, tsOffset: 0, ingest: 0, qty: "1" }] }]))
        expect(Chunk.toReadonlyArray(yield* Stream.runCollect(store.aggregateBillable(q)))).toHaveLength(1)
        expect(Chunk.toReadonlyArray(yield* Stream.runCollect(store.aggregateBillable({ ...q, meterIds: [] })))).toEqual([])
        const late = { scope: s, ingestedAfter: ingestedAt(-1), ingestedBefore: ingestedAt(8), windowMinutes: 60, meterIds: [] }
        expect(yield* store.windowsWithLateRows(late)).toEqual([])
        expect(Option.isNone(yield* store.earliestProcessed(s, []))).toBe(true)
      })
    )
  })
})

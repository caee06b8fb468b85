/**
 * The pipeline's progress statements and the window pass's ledger writes (ledger/Progress.ts), run
 * one by one on a migrated PGlite and compared with what the generated inputs say they must store
 * and answer: marks and window watermarks only move forward, a window's next sequence is one past
 * the highest recorded, every column of an inserted batch round-trips, and what a pair still owes
 * is Σ aggregated − Σ sent over its batches with a send amount plus its archived carry (BigInt oracle).
 */
import { PgClient } from "@effect/sql-pg"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Option } from "effect"
import fc from "fast-check"
import * as Database from "../../src/db/Database.js"
import type { NewBatch } from "../../src/repositories/ledger/Model.js"
import { quantity, runs } from "../support/arbitraries.js"
import { freshDataDir } from "../support/app.js"
import * as O from "../support/oracle.js"
import {
  CUSTOMERS,
  exampleLedger,
  freshScope,
  ledgerArb,
  makeHarness,
  METERS,
  ms,
  PROPERTY_TIMEOUT,
  runnerFor,
  type Seed,
  WINDOW_MS,
  WINDOWS
} from "./ledgerModel.js"

/** The keys the repository's maps use (Model.ts documents them), written out here, not imported. */
const progressKey = (windowStart: Date, meterId: string) => `${windowStart.getTime()}|${meterId}`
const pairKey = (customerId: string, meterId: string) => `${customerId}\u0000${meterId}`
const at = (minutes: number) => new Date(WINDOWS[0]!.getTime() + minutes * 60_000)
const meterSubset = fc.subarray([...METERS])

describe("ledger progress statements against the model (PGlite)", () => {
  layer(Database.layerFrom({ url: Option.none(), dataDir: freshDataDir() }), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    const setup = Effect.all({ run: runnerFor, h: Effect.map(PgClient.PgClient, makeHarness) })

    it.effect("advanceMark keeps the latest watermark and due-through per meter; meterMarks reads the asked meters", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              fc.array(fc.record({ meter: fc.nat(METERS.length - 1), watermark: fc.nat(120), due: fc.nat(120) }), { minLength: 1, maxLength: 6 }),
              meterSubset,
              (calls, asked) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    for (const c of calls) yield* h.repo.advanceMark(METERS[c.meter]!, at(c.watermark), at(c.due))
                    const expected = new Map<string, { watermark: number; due: number }>()
                    for (const c of calls) {
                      const m = METERS[c.meter]!
                      const prev = expected.get(m)
                      expected.set(m, { watermark: Math.max(prev?.watermark ?? -1, c.watermark), due: Math.max(prev?.due ?? -1, c.due) })
                    }
                    const got = yield* h.repo.meterMarks(asked)
                    expect([...got.entries()].map(([k, v]) => [k, v.meterId, ms(v.watermark), ms(v.dueThrough)]).sort()).toEqual(
                      asked
                        .filter((m) => expected.has(m))
                        .map((m) => [m, m, at(expected.get(m)!.watermark).getTime(), at(expected.get(m)!.due).getTime()])
                        .sort()
                    )
                    expect((yield* h.repo.meterMarks([])).size).toBe(0)
                  }),
                  s
                )
              }
            ),
            // first case fixed: marks read back (fast-check's first cases ask for no meter; see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  [
                    { meter: 0, watermark: 50, due: 10 },
                    { meter: 0, watermark: 20, due: 90 },
                    { meter: 2, watermark: 5, due: 5 }
                  ],
                  ["mtr_a", "mtr_b", "mtr_c"]
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("window passes: watermarks and the last sequence only move forward; progress reads and the next sequence follow", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              fc.array(
                fc.record({ window: fc.nat(2), sequence: fc.integer({ min: 1, max: 5 }), watermark: fc.nat(120), meters: meterSubset }),
                { minLength: 1, maxLength: 6 }
              ),
              fc.subarray(WINDOWS.slice(0, 3)),
              meterSubset,
              (passes, askedWindows, askedMeters) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    const windows = new Map<number, { sequence: number; watermark: number }>()
                    const meters = new Map<string, number>()
                    for (const p of passes) {
                      const windowStart = WINDOWS[p.window]!
                      const result = yield* h.repo.recordWindowPass({
                        windowStart,
                        windowEnd: new Date(windowStart.getTime() + WINDOW_MS),
                        sequence: p.sequence,
                        watermark: at(p.watermark),
                        meterIds: p.meters
                      })
                      expect(result).toBeUndefined()
                      const w = windows.get(p.window)
                      windows.set(p.window, { sequence: Math.max(w?.sequence ?? 0, p.sequence), watermark: Math.max(w?.watermark ?? -1, p.watermark) })
                      for (const m of p.meters) {
                        const k = progressKey(windowStart, m)
                        meters.set(k, Math.max(meters.get(k) ?? -1, p.watermark))
                      }
                    }
                    // the windows table as stored
                    const stored = yield* h.owner(windowRows(s))
                    expect(stored).toEqual(
                      [...windows.entries()]
                        .sort(([a], [b]) => a - b)
                        .map(([i, w]) => ({ windowStart: WINDOWS[i]!.getTime(), windowEnd: WINDOWS[i]!.getTime() + WINDOW_MS, watermark: at(w.watermark).getTime(), lastSequence: w.sequence }))
                    )
                    for (let i = 0; i < 3; i++) expect(yield* h.repo.nextSequence(WINDOWS[i]!)).toBe((windows.get(i)?.sequence ?? 0) + 1)

                    const progress = yield* h.repo.windowProgress(askedWindows, askedMeters)
                    const expected = askedWindows.flatMap((w) =>
                      askedMeters.flatMap((m) => {
                        const v = meters.get(progressKey(w, m))
                        return v === undefined ? [] : [[progressKey(w, m), at(v).getTime()] as const]
                      })
                    )
                    expect([...progress.entries()].map(([k, v]) => [k, v.getTime()]).sort()).toEqual(expected.map((e) => [...e]).sort())
                    expect((yield* h.repo.windowProgress([], [...METERS])).size).toBe(0)
                    expect((yield* h.repo.windowProgress(WINDOWS, [])).size).toBe(0)

                    for (const w of askedWindows) {
                      const locked = yield* h.repo.windowProgressForUpdate(w, askedMeters)
                      expect([...locked.entries()].map(([k, v]) => [k, v.getTime()]).sort()).toEqual(
                        askedMeters.flatMap((m) => {
                          const v = meters.get(progressKey(w, m))
                          return v === undefined ? [] : [[m, at(v).getTime()]]
                        }).sort()
                      )
                    }
                    expect((yield* h.repo.windowProgressForUpdate(WINDOWS[0]!, [])).size).toBe(0)
                  }),
                  s
                )
              }
            ),
            // first case fixed: progress in two windows, each read non-empty (see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  [
                    { window: 0, sequence: 2, watermark: 30, meters: ["mtr_a", "mtr_c"] },
                    { window: 0, sequence: 1, watermark: 60, meters: ["mtr_a"] },
                    { window: 2, sequence: 3, watermark: 10, meters: ["mtr_b"] }
                  ],
                  [WINDOWS[0]!, WINDOWS[2]!],
                  ["mtr_a", "mtr_b"]
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    const windowRows = (s: ReturnType<typeof freshScope>) =>
      Effect.flatMap(PgClient.PgClient, (sql) =>
        sql<{ windowStart: Date; windowEnd: Date; watermark: Date; lastSequence: number }>`SELECT window_start, window_end, watermark, last_sequence
          FROM stripe_sync_windows WHERE tenant_id = ${s.tenantId} AND environment_id = ${s.environmentId} ORDER BY window_start`
      ).pipe(Effect.map((rows) => rows.map((r) => ({ windowStart: ms(r.windowStart), windowEnd: ms(r.windowEnd), watermark: ms(r.watermark), lastSequence: Number(r.lastSequence) }))))

    it.effect("insertBatches stores every column of every row; outstanding is Σ aggregated − Σ sent per pair plus the archived carry", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.array(fc.record({ customer: fc.nat(CUSTOMERS.length - 1), meter: fc.nat(METERS.length - 1), carry: fc.oneof(fc.constant("0"), quantity()) }), { maxLength: 4 }),
              fc.subarray([...CUSTOMERS]),
              meterSubset,
              (ledger, carries, askedCustomers, askedMeters) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    // one insert per (window, sequence), as a window pass writes its page
                    const groups = new Map<string, Array<Seed>>()
                    for (const b of ledger) {
                      const k = `${b.windowStart.getTime()}|${b.sequence}`
                      groups.set(k, [...(groups.get(k) ?? []), b])
                    }
                    for (const rows of groups.values()) {
                      const first = rows[0]!
                      yield* h.repo.insertBatches(
                        { start: first.windowStart, end: first.windowEnd },
                        first.sequence,
                        first.watermark,
                        rows.map(
                          (b): NewBatch => ({
                            customerId: b.customerId,
                            meterId: b.meterId,
                            eventType: b.eventType,
                            aggregatedQuantity: b.aggregatedQuantity,
                            sentQuantity: b.sentQuantity,
                            eventCount: b.eventCount,
                            identifier: b.identifier,
                            providerMeterId: b.providerMeterId,
                            status: b.syncStatus === "skipped" ? "skipped" : "pending",
                            skipReason: b.syncStatus === "skipped" ? b.skipReason : null,
                            ingestedAfter: b.ingestedAfter
                          })
                        )
                      )
                    }
                    yield* h.repo.insertBatches({ start: WINDOWS[0]!, end: WINDOWS[1]! }, 9, WINDOWS[1]!, [])
                    const stored = yield* h.stored(s)
                    expect(new Set(stored.map((r) => r.id)).size).toBe(ledger.length)
                    for (const r of stored) expect(r.id).toMatch(/^ssb_[0-9A-Za-z]+$/)
                    const strip = (r: Seed) => ({
                      customerId: r.customerId,
                      meterId: r.meterId,
                      eventType: r.eventType,
                      windowStart: ms(r.windowStart),
                      windowEnd: ms(r.windowEnd),
                      sequence: r.sequence,
                      aggregatedQuantity: O.format(r.aggregatedQuantity),
                      sentQuantity: r.sentQuantity === null ? null : O.format(r.sentQuantity),
                      eventCount: r.eventCount,
                      identifier: r.identifier,
                      providerMeterId: r.providerMeterId,
                      syncStatus: r.syncStatus === "skipped" ? "skipped" : "pending",
                      skipReason: r.syncStatus === "skipped" ? r.skipReason : null,
                      retryCount: 0,
                      errorCode: null,
                      ingestedAfter: ms(r.ingestedAfter),
                      watermark: ms(r.watermark),
                      firstSentAt: null,
                      syncedAt: null,
                      stripeErrorEventId: null
                    })
                    const byIdentifier = (a: { identifier: string }, b: { identifier: string }) => (a.identifier < b.identifier ? -1 : 1)
                    expect(stored.map((r) => ({ ...strip(r), syncStatus: r.syncStatus, skipReason: r.skipReason })).sort(byIdentifier)).toEqual(
                      ledger.map(strip).sort(byIdentifier)
                    )

                    const pairs = new Map<string, { customerId: string; meterId: string; carry: string }>()
                    for (const c of carries) pairs.set(pairKey(CUSTOMERS[c.customer]!, METERS[c.meter]!), { customerId: CUSTOMERS[c.customer]!, meterId: METERS[c.meter]!, carry: c.carry })
                    yield* h.seedPairs(s, [...pairs.values()].map((p) => ({ ...p, synced: 0, skipped: 0 })))
                    const owed = new Map<string, O.Exact>()
                    const owe = (customerId: string, meterId: string, v: O.Exact) => {
                      if (!askedCustomers.includes(customerId as never) || !askedMeters.includes(meterId as never)) return
                      const k = pairKey(customerId, meterId)
                      owed.set(k, O.add(owed.get(k) ?? O.parse("0"), v))
                    }
                    for (const b of ledger) {
                      if (b.sentQuantity !== null && O.compare(b.sentQuantity, b.aggregatedQuantity) !== 0) owe(b.customerId, b.meterId, O.sub(b.aggregatedQuantity, b.sentQuantity))
                    }
                    for (const p of pairs.values()) if (O.compare(p.carry, "0") !== 0) owe(p.customerId, p.meterId, O.parse(p.carry))
                    const got = yield* h.repo.outstanding(askedCustomers, askedMeters)
                    expect([...got.entries()].sort()).toEqual([...owed.entries()].map(([k, v]) => [k, O.format(v)]).sort())
                    expect((yield* h.repo.outstanding([], [...METERS])).size).toBe(0)
                    expect((yield* h.repo.outstanding([...CUSTOMERS], [])).size).toBe(0)
                  }),
                  s
                )
              }
            ),
            // first case fixed: pairs that owe, from batches and from an archived carry (see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger(),
                  [
                    { customer: 0, meter: 0, carry: "-7.25" },
                    { customer: 1, meter: 2, carry: "0" },
                    { customer: 2, meter: 1, carry: "0.000000000003" }
                  ],
                  ["cus_a", "cus_c"],
                  ["mtr_a", "mtr_b", "mtr_c"]
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("refreshStatistics gives the planner statistics of the partitioned ledger", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        const s = freshScope()
        const stats = Effect.flatMap(PgClient.PgClient, (sql) =>
          sql<{ n: string }>`SELECT count(*) AS n FROM pg_stats WHERE tablename = 'stripe_sync_batches' AND inherited`
        ).pipe(Effect.map((rows) => Number(rows[0]!.n)), h.owner)
        const ledger = fc.sample(ledgerArb(8), { numRuns: 1, seed: 19 })[0]!
        yield* Effect.promise(() =>
          run(
            Effect.gen(function* () {
              yield* h.seed(s, ledger)
              expect(yield* stats).toBe(0)
              expect(yield* h.repo.refreshStatistics).toBeUndefined()
              expect(yield* stats).toBeGreaterThan(0)
            }),
            s
          )
        )
      }),
      PROPERTY_TIMEOUT
    )
  })
})


/**
 * The run log and the ledger's reads (ledger/Reports.ts), run one by one on a migrated PGlite over
 * generated ledgers (plus archived pairs and hours) and compared with what the seeded rows say:
 * the newest run, the API's filtered keyset list, the status counts with the archive, recent
 * counts and lag percentiles, the oldest open window, synced totals per hour (BigInt oracle) and
 * counts per window.
 */
import { PgClient } from "@effect/sql-pg"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Option } from "effect"
import fc from "fast-check"
import * as Database from "../../src/db/Database.js"
import type { RunRow, SyncStatus } from "../../src/repositories/ledger/Model.js"
import { quantity, runs } from "../support/arbitraries.js"
import { freshDataDir } from "../support/app.js"
import * as O from "../support/oracle.js"
import {
  asRow,
  byWindowThenId,
  CUSTOMERS,
  exampleLedger,
  freshScope,
  ledgerArb,
  makeHarness,
  METERS,
  NOW,
  PROPERTY_TIMEOUT,
  runnerFor,
  type Seed,
  STATUSES,
  T_UPDATED,
  WINDOWS
} from "./ledgerModel.js"

const HOUR = 3_600_000
const HOURS = ["2025-02-28T22:00:00.000Z", "2025-02-28T23:00:00.000Z", "2025-03-01T00:00:00.000Z", "2025-03-01T01:00:00.000Z", "2025-03-01T02:00:00.000Z"].map(
  (s) => new Date(s)
)
const optional = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined })
const cmp = (a: string | number, b: string | number) => (a < b ? -1 : a > b ? 1 : 0)

/** percentile_cont: linear interpolation between the closest ranks. */
const percentile = (values: ReadonlyArray<number>, p: number): number | null => {
  if (values.length === 0) return null
  const v = [...values].sort((a, b) => a - b)
  const pos = p * (v.length - 1)
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return v[lo]! + (v[hi]! - v[lo]!) * (pos - lo)
}

const abs = (v: string) => (O.compare(v, "0") < 0 ? O.neg(v) : O.parse(v))

describe("ledger report statements against the model (PGlite)", () => {
  layer(Database.layerFrom({ url: Option.none(), dataDir: freshDataDir() }), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    const setup = Effect.all({ run: runnerFor, h: Effect.map(PgClient.PgClient, makeHarness) })

    it.effect("runs: startRun opens a running run, finishRun records its outcome, lastRun reads the newest", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              fc.uniqueArray(
                fc.record({
                  start: fc.nat(100),
                  trigger: fc.constantFrom("schedule" as const, "manual" as const),
                  finish: optional(
                    fc.record({
                      status: fc.constantFrom("completed" as const, "partial" as const, "failed" as const),
                      counts: fc.record({ windows: fc.nat(50), batchesCreated: fc.nat(5000), batchesSynced: fc.nat(5000), batchesFailed: fc.nat(50), batchesSkipped: fc.nat(50) }),
                      error: fc.option(fc.constantFrom("stripe unavailable", "lease lost"), { nil: null })
                    })
                  )
                }),
                { minLength: 1, maxLength: 4, selector: (r) => r.start }
              ),
              (specs) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    expect(Option.isNone(yield* h.repo.lastRun)).toBe(true)
                    const expected: Array<RunRow> = []
                    for (const r of specs) {
                      const startedAt = new Date(NOW.getTime() + r.start * 1000)
                      const id = yield* h.repo.startRun(r.trigger, startedAt)
                      expect(id).toMatch(/^ssr_[0-9a-z]{24}$/)
                      const base: RunRow = {
                        id,
                        trigger: r.trigger,
                        status: "running",
                        startedAt,
                        finishedAt: null,
                        error: null,
                        windows: 0,
                        batchesCreated: 0,
                        batchesSynced: 0,
                        batchesFailed: 0,
                        batchesSkipped: 0
                      }
                      if (r.finish === undefined) expected.push(base)
                      else {
                        const finishedAt = new Date(startedAt.getTime() + 5000)
                        expect(yield* h.repo.finishRun(id, r.finish.status, r.finish.counts, finishedAt, r.finish.error)).toBeUndefined()
                        expected.push({ ...base, ...r.finish.counts, status: r.finish.status, finishedAt, error: r.finish.error })
                      }
                    }
                    expect(new Set(expected.map((r) => r.id)).size).toBe(specs.length)
                    const newest = expected.reduce((a, b) => (b.startedAt > a.startedAt ? b : a))
                    expect(Option.getOrThrow(yield* h.repo.lastRun)).toEqual(newest)
                  }),
                  s
                )
              }
            ),
            // first case fixed: four runs, the newest still running, one failed with an error
            {
              ...runs(20),
              examples: [
                [
                  [
                    { start: 10, trigger: "schedule", finish: { status: "completed", counts: { windows: 3, batchesCreated: 40, batchesSynced: 38, batchesFailed: 1, batchesSkipped: 1 }, error: null } },
                    { start: 40, trigger: "manual", finish: { status: "failed", counts: { windows: 1, batchesCreated: 2, batchesSynced: 0, batchesFailed: 2, batchesSkipped: 0 }, error: "lease lost" } },
                    { start: 90, trigger: "manual", finish: undefined },
                    { start: 20, trigger: "schedule", finish: { status: "partial", counts: { windows: 2, batchesCreated: 7, batchesSynced: 5, batchesFailed: 0, batchesSkipped: 2 }, error: "stripe unavailable" } }
                  ]
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("list: the filtered batches newest first, one keyset page", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.record({
                status: optional(fc.constantFrom(...STATUSES)),
                customerId: optional(fc.constantFrom(...CUSTOMERS)),
                meterId: optional(fc.constantFrom(...METERS)),
                from: optional(fc.constantFrom(...WINDOWS)),
                to: optional(fc.constantFrom(...WINDOWS)),
                before: optional(fc.nat()),
                limit: fc.integer({ min: 1, max: 6 })
              }),
              (ledger, q) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    yield* h.seed(s, ledger)
                    const b = q.before === undefined ? undefined : ledger[q.before % ledger.length]!
                    const before = b === undefined ? undefined : { windowStart: b.windowStart, id: b.id }
                    const expected = ledger
                      .filter(
                        (r) =>
                          (q.status === undefined || r.syncStatus === q.status) &&
                          (q.customerId === undefined || r.customerId === q.customerId) &&
                          (q.meterId === undefined || r.meterId === q.meterId) &&
                          (q.from === undefined || r.windowStart >= q.from) &&
                          (q.to === undefined || r.windowStart < q.to) &&
                          (b === undefined || byWindowThenId(r, b) < 0)
                      )
                      .sort((x, y) => byWindowThenId(y, x))
                      .slice(0, q.limit)
                      .map(asRow)
                    expect(yield* h.repo.list({ ...q, before })).toEqual(expected)
                  }),
                  s
                )
              }
            ),
            // first cases fixed (see exampleLedger): every filter at once, over batches that each
            // filter alone would let through; then the keyset alone
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger([
                    { idKey: 0x600001, customer: 0, meter: 2, window: 4, sequence: 2, status: "failed" },
                    { idKey: 0x600002, customer: 1, meter: 0, window: 2, sequence: 2, status: "failed" },
                    { idKey: 0x600003, customer: 1, meter: 2, window: 2, sequence: 2, status: "failed" },
                    { idKey: 0x600004, customer: 1, meter: 2, window: 0, sequence: 2, status: "failed" },
                    { idKey: 0x600005, customer: 1, meter: 2, window: 5, sequence: 2, status: "failed" },
                    { idKey: 0x600006, customer: 1, meter: 2, window: 3, sequence: 2, status: "pending" }
                  ]),
                  { status: "failed", customerId: "cus_b", meterId: "mtr_c", from: WINDOWS[1]!, to: WINDOWS[5]!, before: undefined, limit: 6 }
                ],
                [exampleLedger(), { status: undefined, customerId: undefined, meterId: undefined, from: undefined, to: undefined, before: 10, limit: 3 }]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("status counts (archived pairs included), recent counts and lags, the oldest open window, counts per window", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.array(fc.record({ customer: fc.constantFrom(...CUSTOMERS), meter: fc.constantFrom(...METERS), synced: fc.nat(3), skipped: fc.nat(3) }), { maxLength: 3 }),
              fc.integer({ min: -7, max: 7 }),
              fc.constantFrom(...WINDOWS),
              fc.constantFrom(...WINDOWS),
              (ledger, archived, sinceStep, from, to) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    const pairs = new Map(archived.map((p) => [`${p.customer}|${p.meter}`, p]))
                    yield* h.seed(s, ledger)
                    yield* h.seedPairs(s, [...pairs.values()].map((p) => ({ customerId: p.customer, meterId: p.meter, carry: "0", synced: p.synced, skipped: p.skipped })))

                    const counts = new Map<string, { status: SyncStatus; skipReason: string | null; count: number }>()
                    const count = (status: SyncStatus, skipReason: string | null, n: number) => {
                      const k = `${status}|${skipReason}`
                      counts.set(k, { status, skipReason, count: (counts.get(k)?.count ?? 0) + n })
                    }
                    for (const r of ledger) count(r.syncStatus, r.skipReason, 1)
                    const archivedSynced = [...pairs.values()].reduce((n, p) => n + p.synced, 0)
                    const archivedSkipped = [...pairs.values()].reduce((n, p) => n + p.skipped, 0)
                    if (archivedSynced > 0) count("synced", null, archivedSynced)
                    if (archivedSkipped > 0) count("skipped", null, archivedSkipped)
                    const order = (a: { status: string; skipReason: string | null }, b: { status: string; skipReason: string | null }) =>
                      cmp(a.status, b.status) || cmp(a.skipReason ?? "", b.skipReason ?? "")
                    expect([...(yield* h.repo.statusCounts)].sort(order)).toEqual([...counts.values()].sort(order))

                    const since = new Date(T_UPDATED.getTime() + sinceStep * 600_000)
                    const recent = ledger.filter((r) => r.updatedAt >= since)
                    const lags = recent.flatMap((r) => (r.syncStatus === "synced" && r.syncedAt !== null ? [(r.syncedAt.getTime() - r.windowEnd.getTime()) / 1000] : []))
                    const stats = yield* h.repo.recentStats(since)
                    expect({ synced: stats.synced, failed: stats.failed }).toEqual({
                      synced: recent.filter((r) => r.syncStatus === "synced").length,
                      failed: recent.filter((r) => r.syncStatus === "failed").length
                    })
                    for (const [got, p] of [[stats.lagP50Seconds, 0.5], [stats.lagP95Seconds, 0.95]] as const) {
                      const want = percentile(lags, p)
                      if (want === null) expect(got).toBeNull()
                      else expect(got).toBeCloseTo(want, 6)
                    }

                    const open = ledger.filter((r) => r.syncStatus === "pending" || r.syncStatus === "sending" || r.syncStatus === "failed")
                    const oldest = yield* h.repo.oldestUnsyncedWindow
                    expect(Option.getOrNull(Option.map(oldest, (d) => d.getTime()))).toBe(open.length === 0 ? null : Math.min(...open.map((r) => r.windowStart.getTime())))

                    const perWindow = new Map<number, Record<SyncStatus, number>>()
                    for (const r of ledger) {
                      if (r.windowStart < from || r.windowStart >= to) continue
                      const k = r.windowStart.getTime()
                      const c = perWindow.get(k) ?? { pending: 0, sending: 0, synced: 0, failed: 0, skipped: 0 }
                      perWindow.set(k, { ...c, [r.syncStatus]: c[r.syncStatus] + 1 })
                    }
                    const byKey = ([a]: [number, unknown], [b]: [number, unknown]) => a - b
                    expect([...(yield* h.repo.countsByWindow(from, to)).entries()].sort(byKey)).toEqual([...perWindow.entries()].sort(byKey))
                  }),
                  s
                )
              }
            ),
            // first case fixed: every status, archived pairs, lags in both halves of the range (see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger(),
                  [
                    { customer: "cus_a", meter: "mtr_a", synced: 2, skipped: 1 },
                    { customer: "cus_c", meter: "mtr_b", synced: 0, skipped: 3 }
                  ],
                  -7,
                  WINDOWS[1]!,
                  WINDOWS[5]!
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("reads of an empty ledger: no counts, no lags, no open window", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        const s = freshScope()
        yield* Effect.promise(() =>
          run(
            Effect.gen(function* () {
              expect(yield* h.repo.statusCounts).toEqual([])
              expect(yield* h.repo.recentStats(WINDOWS[0]!)).toEqual({ synced: 0, failed: 0, lagP50Seconds: null, lagP95Seconds: null })
              expect(Option.isNone(yield* h.repo.oldestUnsyncedWindow)).toBe(true)
              expect((yield* h.repo.countsByWindow(WINDOWS[0]!, NOW)).size).toBe(0)
              expect(yield* h.repo.syncedHourly(HOURS[0]!, HOURS[4]!)).toEqual([])
            }),
            s
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("syncedHourly: Σ sent, Σ |sent| and the count of synced batches per (customer, meter, hour), archived hours added", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.uniqueArray(
                fc.record({ customer: fc.constantFrom(...CUSTOMERS), meter: fc.constantFrom(...METERS), hour: fc.nat(HOURS.length - 1), total: quantity(), batches: fc.nat(2) }),
                { maxLength: 4, selector: (a) => `${a.customer}|${a.meter}|${a.hour}` }
              ),
              fc.nat(HOURS.length - 1),
              fc.nat(HOURS.length - 1),
              (generated, archive, fromIdx, toIdx) => {
                const s = freshScope()
                // a synced batch always has its send amount (the window pass fixes it)
                const ledger = generated.map((r): Seed => (r.syncStatus === "synced" && r.sentQuantity === null ? { ...r, sentQuantity: r.aggregatedQuantity } : r))
                const from = HOURS[fromIdx]!
                const to = HOURS[toIdx]!
                return run(
                  Effect.gen(function* () {
                    yield* h.seed(s, ledger)
                    const hours = archive.map((a) => ({ customerId: a.customer, meterId: a.meter, hour: HOURS[a.hour]!, total: a.total, absTotal: O.format(abs(a.total)), batches: a.batches }))
                    yield* h.seedArchive(s, hours)

                    const groups = new Map<string, { customerId: string; meterId: string; hour: number; total: O.Exact; absTotal: O.Exact; batches: number }>()
                    const add = (customerId: string, meterId: string, hour: number, total: string | O.Exact, absTotal: O.Exact, batches: number) => {
                      const k = `${customerId}|${meterId}|${hour}`
                      const g = groups.get(k) ?? { customerId, meterId, hour, total: O.parse("0"), absTotal: O.parse("0"), batches: 0 }
                      groups.set(k, { ...g, total: O.add(g.total, total), absTotal: O.add(g.absTotal, absTotal), batches: g.batches + batches })
                    }
                    for (const r of ledger) {
                      if (r.syncStatus !== "synced" || r.windowStart < from || r.windowStart >= to) continue
                      add(r.customerId, r.meterId, Math.floor(r.windowStart.getTime() / HOUR) * HOUR, r.sentQuantity!, abs(r.sentQuantity!), 1)
                    }
                    for (const a of hours) if (a.batches > 0 && a.hour >= from && a.hour < to) add(a.customerId, a.meterId, a.hour.getTime(), a.total, O.parse(a.absTotal), a.batches)
                    const expected = [...groups.values()]
                      .sort((a, b) => cmp(a.customerId, b.customerId) || cmp(a.meterId, b.meterId) || a.hour - b.hour)
                      .map((g) => ({ customerId: g.customerId, meterId: g.meterId, hour: new Date(g.hour), total: O.format(g.total), absTotal: O.format(g.absTotal), batches: g.batches }))
                    expect(yield* h.repo.syncedHourly(from, to)).toEqual(expected)
                  }),
                  s
                )
              }
            ),
            // first case fixed: synced hours in both months plus archived ones (see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger(),
                  [
                    { customer: "cus_a", meter: "mtr_a", hour: 2, total: "2.5", batches: 1 },
                    { customer: "cus_c", meter: "mtr_c", hour: 1, total: "-4.000000000001", batches: 2 },
                    { customer: "cus_b", meter: "mtr_b", hour: 3, total: "9", batches: 0 }
                  ],
                  0,
                  4
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("meterAggregations: the aggregation type of each asked meter, deleted ones included", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        const sql = yield* PgClient.PgClient
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              fc.array(fc.record({ type: fc.constantFrom("COUNT", "SUM", "MAX", "LATEST"), deleted: fc.boolean() }), { minLength: METERS.length, maxLength: METERS.length }),
              fc.subarray([...METERS, "mtr_unknown"]),
              (meters, asked) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    yield* sql`INSERT INTO meters (id, tenant_id, environment_id, name, event_name, aggregation_type, deleted_at)
                      SELECT r.id, ${s.tenantId}, ${s.environmentId}, r.id, 'api_call', r.type, CASE WHEN r.deleted THEN now() END
                      FROM jsonb_to_recordset(${JSON.stringify(meters.map((m, i) => ({ id: `${s.environmentId}_${METERS[i]}`, type: m.type, deleted: m.deleted })))}::jsonb)
                        AS r(id text, type text, deleted boolean)`.pipe(h.owner)
                    const ids = asked.map((m) => `${s.environmentId}_${m}`)
                    const got = yield* h.repo.meterAggregations(ids)
                    expect([...got.entries()].sort()).toEqual(
                      asked.flatMap((m) => {
                        const i = METERS.indexOf(m as (typeof METERS)[number])
                        return i < 0 ? [] : [[`${s.environmentId}_${m}`, meters[i]!.type]]
                      }).sort()
                    )
                    expect((yield* h.repo.meterAggregations([])).size).toBe(0)
                  }),
                  s
                )
              }
            ),
            // first case fixed: every meter asked, one unknown (fast-check's first cases ask for none)
            {
              ...runs(20),
              examples: [
                [
                  [
                    { type: "SUM", deleted: false },
                    { type: "MAX", deleted: true },
                    { type: "COUNT", deleted: false }
                  ],
                  ["mtr_a", "mtr_b", "mtr_c", "mtr_unknown"]
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )
  })
})

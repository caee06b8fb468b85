/**
 * Generated windows of processed rows and what the aggregation SQL must answer for them, computed
 * here from the rows alone with the BigInt oracle (test/support/oracle.ts) — never from the
 * store. Shared by the aggregation SQL tests of both backends (aggregate-sql-*.test.ts), which
 * run the store's statements on a real engine (chdb, PGlite) and compare.
 *
 * The edges are dense on purpose: timestamps on and next to the window bounds (to the
 * millisecond), ingestion stamps equal to the read's bounds, zero and cancelling quantities,
 * 12 decimals and 20 integer digits, keys that sort differently by byte and by case, pages of 1–4.
 */
import fc from "fast-check"
import { newId, TenantScope } from "../../src/domain/Ids.js"
import type { AggregateGroup, AggregateQuery, ProcessedEvent } from "../../src/events/EventStore.js"
import { exact } from "../support/arbitraries.js"
import * as O from "../support/oracle.js"

/** An hour-aligned window start (UTC). */
export const T0 = new Date("2025-03-01T10:00:00.000Z")
const HOUR = 3_600_000
/** Ingestion stamps are T_INGEST + k seconds (k = 0..7), so reads can put their bounds on them. */
export const T_INGEST = new Date(T0.getTime() + 2 * HOUR)
export const ingestedAt = (k: number): Date => new Date(T_INGEST.getTime() + k * 1000)

export const CUSTOMERS = ["cus_A", "cus_a", "cus_b", "cus_a_1"] as const
export const METERS = ["mtr_a", "mtr_b", "mtr_c"] as const
export const NAMES = ["api_call", "api_call2", "b"] as const

/** Event time offsets from T0 (ms): both window bounds, next to them, and the previous/next hour. */
const TS_EDGES = [-HOUR, -1, 0, 1, 999, 1000, HOUR / 2, HOUR - 1000, HOUR - 1, HOUR, HOUR + 1, 2 * HOUR - 1]

/** One copy of a processed row as the generator describes it. */
export interface CopySpec {
  readonly customer: number
  readonly name: number
  readonly tsOffset: number
  readonly ingest: number
  readonly qty: string
}

/** One (event, meter) pair and its copies (`copies[0]` first; later copies only where duplicates are allowed). */
export interface PairSpec {
  readonly meter: number
  readonly copies: ReadonlyArray<CopySpec>
}

const qty = fc.oneof(
  { weight: 3, arbitrary: exact().map(O.format) },
  { weight: 1, arbitrary: fc.constantFrom("0", "1", "-1", "0.000000000001", "-0.000000000001", "99999999999999999999.999999999999") }
)

const copySpec = (ingest: fc.Arbitrary<number>): fc.Arbitrary<CopySpec> =>
  fc.record({
    customer: fc.nat(CUSTOMERS.length - 1),
    name: fc.nat(NAMES.length - 1),
    tsOffset: fc.oneof(fc.constantFrom(...TS_EDGES), fc.integer({ min: -HOUR / 12, max: HOUR + HOUR / 12 })),
    ingest,
    qty
  })

/**
 * Copies of a pair in one second share ClickHouse's sort key and may be collapsed, on insert or
 * by a merge, into the first-ingested one; the tests want every copy they wrote to stay, so a
 * pair keeps one copy per second.
 */
const distinctSeconds = (copies: ReadonlyArray<CopySpec>): ReadonlyArray<CopySpec> => {
  const seconds = new Set<number>()
  return copies.filter((c) => {
    const s = Math.floor(c.tsOffset / 1000)
    if (seconds.has(s)) return false
    seconds.add(s)
    return true
  })
}

/**
 * Pairs of one window. With `duplicates`, a pair may have up to three copies with distinct
 * ingestion stamps (ties would make "the first copy" ambiguous), other keys, times and quantities.
 */
export const pairsArb = (opts: { readonly duplicates: boolean; readonly maxPairs?: number }): fc.Arbitrary<ReadonlyArray<PairSpec>> =>
  fc.array(
    fc.record({
      meter: fc.nat(METERS.length - 1),
      stamps: fc.uniqueArray(fc.nat(7), { minLength: 1, maxLength: opts.duplicates ? 3 : 1 })
    }).chain(({ meter, stamps }) =>
      fc.tuple(...stamps.map((k) => copySpec(fc.constant(k)))).map((copies): PairSpec => ({ meter, copies: distinctSeconds(copies) }))
    ),
    { minLength: 1, maxLength: opts.maxPairs ?? 30 }
  )

/**
 * Mostly the open bound (so most reads see rows), else any stamp: fast-check biases small integer
 * ranges toward their ends, which alone made most reads empty.
 */
export const bounded = <A, B>(open: fc.Arbitrary<A>, stamp: fc.Arbitrary<B>): fc.Arbitrary<A | B> =>
  fc.oneof({ weight: 2, arbitrary: open }, { weight: 1, arbitrary: stamp })

/** The read: window bounds near the hour's, ingestion bounds on or between the stamps, 1–3 meters, small pages. */
export interface ReadSpec {
  readonly startOffset: number
  readonly endOffset: number
  readonly after: number | undefined
  readonly before: number
  readonly meters: ReadonlyArray<number>
  readonly pageSize: number
}

export const readArb: fc.Arbitrary<ReadSpec> = fc.record({
  startOffset: fc.constantFrom(0, 0, 0, 1, -1, 500),
  endOffset: fc.constantFrom(HOUR, HOUR, HOUR, HOUR - 1, HOUR + 1, HOUR - 500),
  after: bounded(fc.constant(undefined), fc.integer({ min: -1, max: 7 })),
  before: bounded(fc.constant(8), fc.integer({ min: -1, max: 8 })),
  meters: fc.uniqueArray(fc.nat(METERS.length - 1), { minLength: 1, maxLength: METERS.length }),
  pageSize: fc.integer({ min: 1, max: 4 })
})

/** Every copy as the row a store holds (event ids unique per pair; scope from the test). */
export const rowsOf = (scope: TenantScope, pairs: ReadonlyArray<PairSpec>): ReadonlyArray<ProcessedEvent> =>
  pairs.flatMap((p, i) =>
    p.copies.map(
      (c): ProcessedEvent => ({
        tenantId: scope.tenantId,
        environmentId: scope.environmentId,
        eventId: `evt_${i}`,
        meterId: METERS[p.meter]!,
        customerId: CUSTOMERS[c.customer]!,
        eventName: NAMES[c.name]!,
        timestamp: new Date(T0.getTime() + c.tsOffset),
        ingestedAt: ingestedAt(c.ingest),
        qtyTotal: c.qty,
        qtyBillable: c.qty
      })
    )
  )

export const queryOf = (scope: TenantScope, r: ReadSpec): AggregateQuery => ({
  scope,
  windowStart: new Date(T0.getTime() + r.startOffset),
  windowEnd: new Date(T0.getTime() + r.endOffset),
  ingestedAfter: r.after === undefined ? undefined : ingestedAt(r.after),
  ingestedBefore: ingestedAt(r.before),
  meterIds: r.meters.map((m) => METERS[m]!),
  pageSize: r.pageSize
})

const byKey = (a: AggregateGroup, b: AggregateGroup): number => {
  const ka = [a.customerId, a.meterId, a.eventName]
  const kb = [b.customerId, b.meterId, b.eventName]
  for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1
  return 0
}

/** Groups ordered by (customer, meter, event name), comparing code units (bytes, for these ASCII keys). */
export const sortGroups = (groups: ReadonlyArray<AggregateGroup>): ReadonlyArray<AggregateGroup> => [...groups].sort(byKey)

/**
 * What a window read must return: of the rows of the read's meters inside [start, end), per
 * (event, meter) the first-ingested copy; kept when that copy was ingested in (after, before] and
 * its quantity is not zero; grouped by (customer, meter, event name) with the exact sum and the
 * row count. Groups whose quantities cancel stay (their rows were billable).
 */
export const expectedGroups = (rows: ReadonlyArray<ProcessedEvent>, q: AggregateQuery): ReadonlyArray<AggregateGroup> => {
  const first = new Map<string, ProcessedEvent>()
  for (const r of rows) {
    const t = r.timestamp.getTime()
    if (!q.meterIds.includes(r.meterId) || t < q.windowStart.getTime() || t >= q.windowEnd.getTime()) continue
    const key = `${r.eventId}\u0000${r.meterId}`
    const seen = first.get(key)
    if (seen === undefined || r.ingestedAt.getTime() < seen.ingestedAt.getTime()) first.set(key, r)
  }
  const groups = new Map<string, { row: ProcessedEvent; values: Array<string> }>()
  for (const r of first.values()) {
    const ing = r.ingestedAt.getTime()
    if (ing > q.ingestedBefore.getTime() || (q.ingestedAfter !== undefined && ing <= q.ingestedAfter.getTime())) continue
    if (O.compare(r.qtyBillable, "0") === 0) continue
    const key = `${r.customerId}\u0000${r.meterId}\u0000${r.eventName}`
    const g = groups.get(key) ?? { row: r, values: [] }
    g.values.push(r.qtyBillable)
    groups.set(key, g)
  }
  return sortGroups(
    [...groups.values()].map(({ row, values }) => ({
      customerId: row.customerId,
      meterId: row.meterId,
      eventName: row.eventName,
      quantity: O.format(O.sum(values)),
      eventCount: values.length
    }))
  )
}

/**
 * Starts of the `windowMinutes` windows (aligned to the epoch) of the pairs whose first copy (of
 * the given meters, at any time) was ingested in (after, before]; `skipZero` leaves out pairs
 * whose first copy has quantity 0 (the PostgreSQL statement does, the ClickHouse one does not).
 */
export const expectedLateWindows = (
  rows: ReadonlyArray<ProcessedEvent>,
  q: { readonly ingestedAfter: Date; readonly ingestedBefore: Date; readonly windowMinutes: number; readonly meterIds: ReadonlyArray<string> },
  skipZero: boolean
): ReadonlyArray<number> => {
  const first = new Map<string, ProcessedEvent>()
  for (const r of rows) {
    if (!q.meterIds.includes(r.meterId)) continue
    const key = `${r.eventId}\u0000${r.meterId}`
    const seen = first.get(key)
    if (seen === undefined || r.ingestedAt.getTime() < seen.ingestedAt.getTime()) first.set(key, r)
  }
  const size = BigInt(q.windowMinutes) * 60_000n
  const starts = new Set<number>()
  for (const r of first.values()) {
    const ing = r.ingestedAt.getTime()
    if (ing <= q.ingestedAfter.getTime() || ing > q.ingestedBefore.getTime()) continue
    if (skipZero && O.compare(r.qtyBillable, "0") === 0) continue
    const t = BigInt(r.timestamp.getTime())
    starts.add(Number((t / size) * size))
  }
  return [...starts].sort((a, b) => a - b)
}

/** Earliest timestamp (ms) of the rows of these meters (`skipZero`: of their non-zero rows). */
export const expectedEarliest = (rows: ReadonlyArray<ProcessedEvent>, meterIds: ReadonlyArray<string>, skipZero: boolean): number | undefined => {
  const ts = rows
    .filter((r) => meterIds.includes(r.meterId) && !(skipZero && O.compare(r.qtyBillable, "0") === 0))
    .map((r) => r.timestamp.getTime())
  return ts.length === 0 ? undefined : Math.min(...ts)
}

/** Generous: the machine these run on may be busy; a normal run takes a few seconds per property. */
export const PROPERTY_TIMEOUT = 240_000

/** A fresh tenant environment per property run. */
export const freshScope = () => new TenantScope({ tenantId: newId.tenant(), environmentId: newId.environment() })

/** A late-window / earliest-row read: ingestion bounds, window size and a meter subset. */
export const lateReadArb = fc.record({
  after: bounded(fc.constant(-1), fc.integer({ min: -1, max: 7 })),
  before: bounded(fc.constant(8), fc.integer({ min: -1, max: 8 })),
  windowMinutes: fc.constantFrom(1, 5, 60, 1440),
  meters: fc.uniqueArray(fc.nat(METERS.length - 1), { minLength: 1, maxLength: METERS.length })
})

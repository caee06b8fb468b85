/**
 * The behaviour every EventStore backend must show (see src/events/EventStore.ts). Each backend's
 * test file calls `eventStoreContract(name, layer)`. Every test works in a fresh random
 * tenant/environment, so suites can share one database and run in any order.
 */
import { describe, expect, layer as itLayer } from "@effect/vitest"
import { Chunk, Effect, Layer, Option, Stream } from "effect"
import { newId, TenantScope } from "../../src/domain/Ids.js"
import {
  EventStore,
  type AggregateGroup,
  type AggregateQuery,
  type EventKeyset,
  type ProcessedEvent,
  type StoredEvent
} from "../../src/events/EventStore.js"

const at = (iso: string) => new Date(iso)
const T0 = at("2025-03-01T10:00:00.000Z")
const minutes = (d: Date, m: number) => new Date(d.getTime() + m * 60_000)
const ms = (d: Date, n: number) => new Date(d.getTime() + n)

export const freshScope = (): TenantScope => new TenantScope({ tenantId: newId.tenant(), environmentId: newId.environment() })

export const storedEvent = (scope: TenantScope, over: Partial<StoredEvent> = {}): StoredEvent => ({
  tenantId: scope.tenantId,
  environmentId: scope.environmentId,
  eventId: newId.event(),
  eventName: "api_call",
  externalCustomerId: "ext-1",
  customerId: null,
  timestamp: T0,
  ingestedAt: minutes(T0, 1),
  propertiesJson: '{"tokens":0.1}',
  status: "pending",
  error: null,
  ...over
})

export const processedRow = (scope: TenantScope, over: Partial<ProcessedEvent> = {}): ProcessedEvent => ({
  tenantId: scope.tenantId,
  environmentId: scope.environmentId,
  eventId: newId.event(),
  customerId: "cust_a",
  meterId: "mtr_a",
  eventName: "api_call",
  timestamp: T0,
  ingestedAt: minutes(T0, 1),
  qtyTotal: "1",
  qtyBillable: "1",
  ...over
})

const hourQuery = (scope: TenantScope, over: Partial<AggregateQuery> = {}): AggregateQuery => ({
  scope,
  windowStart: T0,
  windowEnd: minutes(T0, 60),
  ingestedBefore: minutes(T0, 24 * 60),
  meterIds: ["mtr_a", "mtr_b"],
  pageSize: 100,
  ...over
})

const aggregate = (q: AggregateQuery) =>
  EventStore.pipe(
    Effect.flatMap((store) => Stream.runCollect(store.aggregateBillable(q))),
    Effect.map((c) => Chunk.toReadonlyArray(c))
  )

const brief = (groups: ReadonlyArray<AggregateGroup>) =>
  groups.map((g) => `${g.customerId}|${g.meterId}|${g.eventName}|${g.quantity}|${g.eventCount}`)

export const eventStoreContract = (name: string, storeLayer: Layer.Layer<EventStore, unknown>): void => {
  describe(name, () => {
    itLayer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("ping answers", () => EventStore.pipe(Effect.flatMap((s) => s.ping())))

      it.effect("insertEvents is idempotent on event_id: the first stored copy wins", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const e1 = storedEvent(scope, { eventId: "evt-1", propertiesJson: '{"tokens":1}' })
          const e2 = storedEvent(scope, { eventId: "evt-2", timestamp: ms(T0, 1) })
          expect([...(yield* store.insertEvents([e1, e2]))].sort()).toEqual(["evt-1", "evt-2"])

          const resent = { ...e1, propertiesJson: '{"tokens":999}', timestamp: minutes(T0, 5), ingestedAt: minutes(T0, 9) }
          const e3 = storedEvent(scope, { eventId: "evt-3", timestamp: ms(T0, 2) })
          expect(yield* store.insertEvents([resent, e3])).toEqual(["evt-3"])

          // a duplicate inside one batch is stored once
          const e4 = storedEvent(scope, { eventId: "evt-4", timestamp: ms(T0, 3), propertiesJson: '{"n":"first"}' })
          const e4b = { ...e4, propertiesJson: '{"n":"second"}' }
          expect(yield* store.insertEvents([e4, e4b])).toEqual(["evt-4"])
          expect(yield* store.insertEvents([])).toEqual([])

          const page = yield* store.listEvents({ scope, limit: 100 })
          expect(page.events.map((e) => e.eventId).sort()).toEqual(["evt-1", "evt-2", "evt-3", "evt-4"])
          const stored1 = page.events.find((e) => e.eventId === "evt-1")!
          expect(stored1.propertiesJson).toBe('{"tokens":1}')
          expect(stored1.timestamp.toISOString()).toBe(T0.toISOString())
          expect(page.events.find((e) => e.eventId === "evt-4")!.propertiesJson).toBe('{"n":"first"}')
        })
      )

      it.effect("events round-trip exactly (millisecond instants, JSON text, odd characters)", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const e = storedEvent(scope, {
            eventId: "evt:odd.id-1_x",
            eventName: "name with 'quotes' \\ and\ttabs",
            externalCustomerId: "ext\n'); DROP TABLE events; --",
            timestamp: at("2025-03-01T10:00:00.123Z"),
            ingestedAt: at("2025-03-01T10:00:01.987Z"),
            propertiesJson: '{"a":"line1\\nline2","b":0.1000,"c":"ünï\\u0000"}',
            status: "error",
            error: "property tokens is not numeric"
          })
          yield* store.insertEvents([e])
          const page = yield* store.listEvents({ scope, limit: 10 })
          expect(page.events).toEqual([e])
        })
      )

      it.effect("tenant and environment isolation", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const a = freshScope()
          const b = new TenantScope({ tenantId: a.tenantId, environmentId: newId.environment() })
          yield* store.insertEvents([storedEvent(a, { eventId: "same-id" })])
          // the same event id in another environment is a different event
          expect(yield* store.insertEvents([storedEvent(b, { eventId: "same-id" })])).toEqual(["same-id"])
          yield* store.insertProcessed([processedRow(a, { qtyBillable: "5" })])
          expect(yield* aggregate(hourQuery(b))).toEqual([])
          expect((yield* store.listEvents({ scope: b, limit: 10 })).events).toHaveLength(1)
          expect(Option.isNone(yield* store.earliestProcessed(b, ["mtr_a"]))).toBe(true)
          expect(brief(yield* aggregate(hourQuery(a)))).toEqual(["cust_a|mtr_a|api_call|5|1"])
        })
      )

      it.effect("customersWithEvents names exactly the asked customers with an event, in this scope only", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const a = freshScope()
          const b = new TenantScope({ tenantId: a.tenantId, environmentId: newId.environment() })
          yield* store.insertEvents([
            storedEvent(a, { externalCustomerId: "ext-a" }),
            storedEvent(a, { externalCustomerId: "ext-a" }),
            storedEvent(a, { externalCustomerId: "ext-'quoted" }),
            storedEvent(a, { externalCustomerId: "ext-not-asked" }),
            storedEvent(b, { externalCustomerId: "ext-b" })
          ])
          const found = yield* store.customersWithEvents(a, ["ext-a", "ext-'quoted", "ext-b", "ext-none"])
          expect([...found].sort()).toEqual(["ext-'quoted", "ext-a"])
          expect([...(yield* store.customersWithEvents(a, []))]).toEqual([])
        })
      )

      it.effect("10,000 rows of 0.1 sum to exactly 1000", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const rows = Array.from({ length: 10_000 }, (_, i) =>
            processedRow(scope, { eventId: `evt-${i}`, timestamp: ms(T0, i * 300), qtyTotal: "0.1", qtyBillable: "0.1" })
          )
          yield* store.insertProcessed(rows)
          const groups = yield* aggregate(hourQuery(scope))
          expect(groups).toEqual([{ customerId: "cust_a", meterId: "mtr_a", eventName: "api_call", quantity: "1000", eventCount: 10_000 }])
        })
      )

      it.effect("quantities keep every digit of Decimal(38,12)", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          yield* store.insertProcessed([
            processedRow(scope, { qtyBillable: "12345678901234.123456789012" }),
            processedRow(scope, { qtyBillable: "0.000000000001" }),
            processedRow(scope, { qtyBillable: "1e3" }),
            processedRow(scope, { qtyBillable: "2.50" })
          ])
          expect(brief(yield* aggregate(hourQuery(scope)))).toEqual(["cust_a|mtr_a|api_call|12345678902236.623456789013|4"])
        })
      )

      it.effect("processed rows count once per (event, meter), using the first-ingested copy", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const first = processedRow(scope, { eventId: "evt-x", qtyBillable: "3", ingestedAt: minutes(T0, 1) })
          const other = processedRow(scope, { eventId: "evt-x", meterId: "mtr_b", qtyBillable: "7", ingestedAt: minutes(T0, 1) })
          yield* store.insertProcessed([first, other])
          // a resend with another quantity, ingested later
          yield* store.insertProcessed([{ ...first, qtyBillable: "100", ingestedAt: minutes(T0, 30) }])
          yield* store.insertProcessed([first, { ...first, qtyBillable: "50" }])
          expect(brief(yield* aggregate(hourQuery(scope)))).toEqual([
            "cust_a|mtr_a|api_call|3|1",
            "cust_a|mtr_b|api_call|7|1"
          ])
          // the late copy is not new: a delta read after the first ingestion finds nothing
          expect(yield* aggregate(hourQuery(scope, { ingestedAfter: minutes(T0, 2) }))).toEqual([])
        })
      )

      it.effect("an event_id re-sent with a timestamp in another hour counts once, in the first copy's hour", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          // Each copy goes through both writes, in both orders the ingestors use.
          const ingestCopy = (event: StoredEvent, rows: ReadonlyArray<ProcessedEvent>, processedFirst: boolean) =>
            processedFirst
              ? Effect.zipRight(store.insertProcessed(rows), store.insertEvents([event]))
              : Effect.zipLeft(store.insertEvents([event]), store.insertProcessed(rows))
          const copy = (eventId: string, timestamp: Date, ingestedAt: Date, qty: string) =>
            [
              storedEvent(scope, { eventId, timestamp, ingestedAt, customerId: "cust_a", status: "processed", propertiesJson: `{"q":${qty}}` }),
              [
                processedRow(scope, { eventId, timestamp, ingestedAt, qtyBillable: qty }),
                processedRow(scope, { eventId, timestamp, ingestedAt, meterId: "mtr_b", qtyBillable: qty })
              ]
            ] as const
          const hour2 = { windowStart: minutes(T0, 60), windowEnd: minutes(T0, 120) }
          const hour0 = { windowStart: minutes(T0, -60), windowEnd: T0 }
          for (const processedFirst of [true, false]) {
            const late = `evt-late-${processedFirst}`
            const early = `evt-early-${processedFirst}`
            // first copies in T0's hour; the resends fall in the next hour and in the previous one
            expect(yield* ingestCopy(...copy(late, minutes(T0, 50), minutes(T0, 61), "3"), processedFirst)).toEqual([late])
            expect(yield* ingestCopy(...copy(early, minutes(T0, 10), minutes(T0, 61), "5"), processedFirst)).toEqual([early])
            expect(yield* ingestCopy(...copy(late, minutes(T0, 70), minutes(T0, 130), "100"), processedFirst)).toEqual([])
            expect(yield* ingestCopy(...copy(early, minutes(T0, -20), minutes(T0, 130), "200"), processedFirst)).toEqual([])
          }
          // oracle: two events per pass (3 + 5), two passes, once per meter
          const total = String(2n * (3n + 5n))
          expect(brief(yield* aggregate(hourQuery(scope)))).toEqual([`cust_a|mtr_a|api_call|${total}|4`, `cust_a|mtr_b|api_call|${total}|4`])
          expect(yield* aggregate(hourQuery(scope, hour2))).toEqual([])
          expect(yield* aggregate(hourQuery(scope, hour0))).toEqual([])
          // the resends are neither deltas nor late rows
          expect(yield* aggregate(hourQuery(scope, { ...hour2, ingestedAfter: minutes(T0, 100) }))).toEqual([])
          expect(yield* aggregate(hourQuery(scope, { ingestedAfter: minutes(T0, 100) }))).toEqual([])
          expect(
            yield* store.windowsWithLateRows({ scope, ingestedAfter: minutes(T0, 100), ingestedBefore: minutes(T0, 300), windowMinutes: 60, meterIds: ["mtr_a", "mtr_b"] })
          ).toEqual([])
          expect(Option.map(yield* store.earliestProcessed(scope, ["mtr_a", "mtr_b"]), (d) => d.toISOString())).toEqual(
            Option.some(minutes(T0, 10).toISOString())
          )
          const listed = (yield* store.listEvents({ scope, limit: 100 })).events
          expect(listed.map((e) => `${e.eventId}@${e.timestamp.toISOString()}`).sort()).toEqual(
            [
              `evt-early-false@${minutes(T0, 10).toISOString()}`,
              `evt-early-true@${minutes(T0, 10).toISOString()}`,
              `evt-late-false@${minutes(T0, 50).toISOString()}`,
              `evt-late-true@${minutes(T0, 50).toISOString()}`
            ]
          )
        })
      )

      it.effect("copies of one event written concurrently with different timestamps count once", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          // 8 writers race with copies of the same 20 events, each writer with its own hour
          const writers = Array.from({ length: 8 }, (_, w) =>
            Array.from({ length: 20 }, (_, i) =>
              processedRow(scope, { eventId: `evt-${i}`, timestamp: minutes(T0, 60 * w + i), ingestedAt: minutes(T0, 600 + w), qtyBillable: String(w + 1) })
            )
          )
          yield* Effect.forEach(writers, (rows) => store.insertProcessed(rows), { concurrency: "unbounded", discard: true })
          const counted: Array<{ hour: number; quantity: bigint; events: number }> = []
          for (let w = 0; w < 8; w++) {
            const groups = yield* aggregate(hourQuery(scope, { windowStart: minutes(T0, 60 * w), windowEnd: minutes(T0, 60 * (w + 1)) }))
            for (const g of groups) counted.push({ hour: w, quantity: BigInt(g.quantity), events: g.eventCount })
          }
          // whichever writer won an event, the event is counted once with that writer's quantity:
          // 20 events in all, each hour's total = its event count × (hour + 1)
          expect(counted.reduce((n, c) => n + c.events, 0)).toBe(20)
          for (const c of counted) expect(c.quantity).toBe(BigInt(c.events) * BigInt(c.hour + 1))
        })
      )

      it.effect("aggregation groups by (customer, meter, event name) and filters window, meters and quantity", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          yield* store.insertProcessed([
            processedRow(scope, { customerId: "cust_b", qtyBillable: "2" }),
            processedRow(scope, { customerId: "cust_b", qtyBillable: "3", timestamp: ms(minutes(T0, 60), -1) }),
            processedRow(scope, { customerId: "cust_a", qtyBillable: "1.5" }),
            processedRow(scope, { customerId: "cust_a", eventName: "upload", qtyBillable: "4" }),
            processedRow(scope, { customerId: "cust_a", meterId: "mtr_b", qtyBillable: "0.25" }),
            // excluded: other meter, zero quantity, before the window, at the (exclusive) end
            processedRow(scope, { customerId: "cust_a", meterId: "mtr_c", qtyBillable: "9" }),
            processedRow(scope, { customerId: "cust_a", qtyBillable: "0" }),
            processedRow(scope, { customerId: "cust_a", qtyBillable: "9", timestamp: ms(T0, -1) }),
            processedRow(scope, { customerId: "cust_a", qtyBillable: "9", timestamp: minutes(T0, 60) })
          ])
          expect(brief(yield* aggregate(hourQuery(scope)))).toEqual([
            "cust_a|mtr_a|api_call|1.5|1",
            "cust_a|mtr_a|upload|4|1",
            "cust_a|mtr_b|api_call|0.25|1",
            "cust_b|mtr_a|api_call|5|2"
          ])
          expect(brief(yield* aggregate(hourQuery(scope, { meterIds: ["mtr_b"] })))).toEqual(["cust_a|mtr_b|api_call|0.25|1"])
          expect(yield* aggregate(hourQuery(scope, { meterIds: [] }))).toEqual([])
          // the next hour holds the row at the end of this one
          expect(
            brief(yield* aggregate(hourQuery(scope, { windowStart: minutes(T0, 60), windowEnd: minutes(T0, 120), meterIds: ["mtr_a", "mtr_c"] })))
          ).toEqual(["cust_a|mtr_a|api_call|9|1"])
        })
      )

      it.effect("ingestion bounds: ingestedAfter exclusive, ingestedBefore inclusive (delta reads)", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const w1 = minutes(T0, 61)
          const w2 = minutes(T0, 121)
          yield* store.insertProcessed([
            processedRow(scope, { qtyBillable: "1", ingestedAt: minutes(T0, 10) }),
            processedRow(scope, { qtyBillable: "2", ingestedAt: w1 }),
            processedRow(scope, { qtyBillable: "4", ingestedAt: ms(w1, 1) }),
            processedRow(scope, { qtyBillable: "8", ingestedAt: w2 }),
            processedRow(scope, { qtyBillable: "16", ingestedAt: ms(w2, 1) })
          ])
          const run = (after: Date | undefined, before: Date) =>
            aggregate(hourQuery(scope, { ingestedAfter: after, ingestedBefore: before })).pipe(Effect.map(brief))
          expect(yield* run(undefined, w1)).toEqual(["cust_a|mtr_a|api_call|3|2"])
          expect(yield* run(w1, w2)).toEqual(["cust_a|mtr_a|api_call|12|2"])
          expect(yield* run(w2, minutes(T0, 600))).toEqual(["cust_a|mtr_a|api_call|16|1"])
          expect(yield* run(undefined, ms(T0, 0))).toEqual([])
        })
      )

      it.effect("streams every group, in order, across pages smaller than the result", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const rows: Array<ProcessedEvent> = []
          for (let c = 0; c < 7; c++) {
            for (const meterId of ["mtr_a", "mtr_b"]) {
              for (const eventName of ["a", "b"]) {
                rows.push(processedRow(scope, { customerId: `cust_${c}`, meterId, eventName, qtyBillable: `${c}.5` }))
              }
            }
          }
          yield* store.insertProcessed(rows)
          const expected = rows
            .map((r) => `${r.customerId}|${r.meterId}|${r.eventName}|${r.qtyBillable}|1`)
            .sort()
          for (const pageSize of [1, 3, 7, 28, 100]) {
            expect(brief(yield* aggregate(hourQuery(scope, { pageSize })))).toEqual(expected)
          }
        })
      )

      it.effect("windowsWithLateRows finds the aligned windows of rows first ingested in (after, before]", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const watermark = minutes(T0, 200)
          const early = processedRow(scope, { timestamp: minutes(T0, 5), ingestedAt: minutes(T0, 70) })
          yield* store.insertProcessed([
            early,
            processedRow(scope, { timestamp: minutes(T0, 75), ingestedAt: watermark }), // not after the watermark
            processedRow(scope, { timestamp: minutes(T0, 130), ingestedAt: ms(watermark, 1) }),
            processedRow(scope, { timestamp: minutes(T0, 150), ingestedAt: minutes(T0, 250) }),
            processedRow(scope, { timestamp: ms(minutes(T0, 180), -1), ingestedAt: minutes(T0, 260) }),
            processedRow(scope, { timestamp: minutes(T0, -30), meterId: "mtr_b", ingestedAt: minutes(T0, 260) }),
            processedRow(scope, { timestamp: minutes(T0, 400), meterId: "mtr_c", ingestedAt: minutes(T0, 260) })
          ])
          // a resend of an old row after the watermark is not a late row
          yield* store.insertProcessed([{ ...early, ingestedAt: minutes(T0, 255) }])
          const windows = yield* store.windowsWithLateRows({
            scope,
            ingestedAfter: watermark,
            ingestedBefore: minutes(T0, 300),
            windowMinutes: 60,
            meterIds: ["mtr_a", "mtr_b"]
          })
          expect(windows.map((d) => d.toISOString())).toEqual([
            minutes(T0, -60).toISOString(),
            minutes(T0, 120).toISOString()
          ])
          const quarter = yield* store.windowsWithLateRows({
            scope,
            ingestedAfter: watermark,
            ingestedBefore: minutes(T0, 300),
            windowMinutes: 15,
            meterIds: ["mtr_a"]
          })
          expect(quarter.map((d) => d.toISOString())).toEqual([
            minutes(T0, 120).toISOString(),
            minutes(T0, 150).toISOString(),
            minutes(T0, 165).toISOString()
          ])
          expect(yield* store.windowsWithLateRows({ scope, ingestedAfter: watermark, ingestedBefore: minutes(T0, 300), windowMinutes: 60, meterIds: [] })).toEqual([])
        })
      )

      it.effect("earliestProcessed is the earliest event timestamp of the given meters", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          expect(Option.isNone(yield* store.earliestProcessed(scope, ["mtr_a"]))).toBe(true)
          yield* store.insertProcessed([
            processedRow(scope, { timestamp: ms(T0, 250) }),
            processedRow(scope, { timestamp: minutes(T0, 30) }),
            processedRow(scope, { meterId: "mtr_b", timestamp: minutes(T0, -90) })
          ])
          expect(Option.map(yield* store.earliestProcessed(scope, ["mtr_a"]), (d) => d.toISOString())).toEqual(
            Option.some(ms(T0, 250).toISOString())
          )
          expect(Option.map(yield* store.earliestProcessed(scope, ["mtr_a", "mtr_b"]), (d) => d.toISOString())).toEqual(
            Option.some(minutes(T0, -90).toISOString())
          )
          expect(Option.isNone(yield* store.earliestProcessed(scope, []))).toBe(true)
          expect(Option.isNone(yield* store.earliestProcessed(scope, ["mtr_zzz"]))).toBe(true)
        })
      )

      it.effect("listEvents pages newest first with a keyset cursor and filters", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const events = Array.from({ length: 7 }, (_, i) =>
            storedEvent(scope, {
              eventId: `evt-${i}`,
              // evt-5 and evt-6 share a timestamp: the tie is broken by event id
              timestamp: minutes(T0, Math.min(i, 5)),
              externalCustomerId: i % 2 === 0 ? "ext-even" : "ext-odd",
              eventName: i < 3 ? "early" : "late"
            })
          )
          yield* store.insertEvents(events)
          const seen: Array<string> = []
          let cursor: EventKeyset | undefined
          let pages = 0
          do {
            const page = yield* store.listEvents({ scope, limit: 3, cursor })
            expect(page.events.length).toBeLessThanOrEqual(3)
            seen.push(...page.events.map((e) => e.eventId))
            cursor = page.nextCursor ?? undefined
            pages++
          } while (cursor !== undefined && pages < 10)
          expect(seen).toEqual(["evt-6", "evt-5", "evt-4", "evt-3", "evt-2", "evt-1", "evt-0"])
          expect(pages).toBe(3)

          const exact = yield* store.listEvents({ scope, limit: 7 })
          expect(exact.events).toHaveLength(7)
          expect(exact.nextCursor).toBeNull()

          const ids = (q: Partial<Parameters<typeof store.listEvents>[0]>) =>
            store.listEvents({ scope, limit: 100, ...q }).pipe(Effect.map((p) => p.events.map((e) => e.eventId)))
          expect(yield* ids({ externalCustomerId: "ext-odd" })).toEqual(["evt-5", "evt-3", "evt-1"])
          expect(yield* ids({ eventName: "early" })).toEqual(["evt-2", "evt-1", "evt-0"])
          expect(yield* ids({ eventName: "late", externalCustomerId: "ext-even" })).toEqual(["evt-6", "evt-4"])
          // from inclusive, to exclusive
          expect(yield* ids({ from: minutes(T0, 1), to: minutes(T0, 3) })).toEqual(["evt-2", "evt-1"])
          expect(yield* ids({ from: minutes(T0, 5) })).toEqual(["evt-6", "evt-5"])
          expect(yield* ids({ externalCustomerId: "nobody" })).toEqual([])

          const filtered = yield* store.listEvents({ scope, limit: 1, eventName: "early" })
          expect(filtered.events.map((e) => e.eventId)).toEqual(["evt-2"])
          const next = yield* store.listEvents({ scope, limit: 5, eventName: "early", cursor: filtered.nextCursor! })
          expect(next.events.map((e) => e.eventId)).toEqual(["evt-1", "evt-0"])
          expect(next.nextCursor).toBeNull()
        })
      )

      it.effect("updateEventStatus records customer, status and error; the latest update wins", () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          const scope = freshScope()
          const a = storedEvent(scope, { eventId: "evt-a", timestamp: ms(T0, 10) })
          const b = storedEvent(scope, { eventId: "evt-b", timestamp: ms(T0, 20) })
          const c = storedEvent(scope, { eventId: "evt-c", timestamp: minutes(T0, 45) })
          yield* store.insertEvents([a, b, c])
          yield* store.updateEventStatus(scope, [
            { eventId: "evt-a", customerId: "cust_1", status: "processed", error: null },
            { eventId: "evt-b", customerId: null, status: "error", error: "property tokens is not numeric" },
            { eventId: "evt-unknown", customerId: "cust_1", status: "processed", error: null }
          ])
          yield* store.updateEventStatus(scope, [])
          const get = () =>
            store.listEvents({ scope, limit: 10 }).pipe(Effect.map((p) => new Map(p.events.map((e) => [e.eventId, e] as const))))
          let byId = yield* get()
          expect(byId.size).toBe(3)
          expect(byId.get("evt-a")).toMatchObject({ customerId: "cust_1", status: "processed", error: null, propertiesJson: a.propertiesJson })
          expect(byId.get("evt-a")!.timestamp.toISOString()).toBe(a.timestamp.toISOString())
          expect(byId.get("evt-b")).toMatchObject({ customerId: null, status: "error", error: "property tokens is not numeric" })
          expect(byId.get("evt-c")).toMatchObject({ customerId: null, status: "pending", error: null })

          // a later update (also twice in one call: the last one wins) replaces the earlier one
          yield* store.updateEventStatus(scope, [
            { eventId: "evt-b", customerId: "cust_2", status: "pending", error: null },
            { eventId: "evt-b", customerId: "cust_2", status: "processed", error: null }
          ])
          byId = yield* get()
          expect(byId.size).toBe(3)
          expect(byId.get("evt-b")).toMatchObject({ customerId: "cust_2", status: "processed", error: null })
          expect(byId.get("evt-a")).toMatchObject({ customerId: "cust_1", status: "processed" })
          // a status update does not make the event "new" again
          expect(yield* store.insertEvents([a])).toEqual([])
        })
      )
    })
  })
}

/**
 * Money invariants of issue #12 through the real service and the Stripe emulator over HTTP:
 * nothing lost or billed twice when settings change, corrections arrive, or Stripe keeps only
 * part of what it receives. Expected totals are plain BigInt arithmetic on the ingested
 * quantities (test/support/oracle.ts), never values read back from the ledger.
 */
import { layer } from "@effect/vitest"
import { DateTime, Effect, Layer } from "effect"
import { describe, expect } from "vitest"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, apiError, inTestTenant } from "../support/TestApp.js"
import { FILE_HOUR, HOUR, hoursAgo, type MeterSetup } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

/** Expected totals: the shared BigInt oracle (test/support/oracle.ts) on the ingested quantities. */
const oracle = { sum: (values: ReadonlyArray<string>): string => O.format(O.sum(values)) }

const coded = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]

/** A meter mapped (through the repository, as a mapping stored before any API check) to a pre-aggregated Stripe meter. */
const preAggregatedMeter = (name: string, window: "hour" | "day") =>
  Effect.gen(function* () {
    const emulator = yield* SyncEmulator
    const [created, response] = yield* (yield* ApiClient).meters.create({
      payload: { name, event_name: name, aggregation: { type: "SUM", field: "qty" } },
      withResponse: true
    })
    expect(response.status).toBe(201)
    const stripeEventName = `stripe_${name}`
    const m = yield* emulator.createMeter({
      display_name: name,
      event_name: stripeEventName,
      default_aggregation: { formula: "sum" },
      customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
      value_settings: { event_payload_key: "value" },
      // Stripe's documented create parameter (docs.stripe.com/api/billing/meter/create)
      event_time_window: window
    } as Parameters<StripeEmulatorHandle["createMeter"]>[0])
    expect(m.event_time_window).toBe(window)
    yield* inTestTenant(
      Effect.flatMap(MeterMappingRepo, (r) =>
        r.upsert({
          meterId: created.id,
          providerMeterId: m.id,
          stripeEventName,
          customerPayloadKey: "stripe_customer_id",
          valuePayloadKey: "value",
          formula: "sum",
          wholeUnits: false,
          syncEnabled: true
        })
      )
    )
    return { meterId: created.id, eventName: name, stripeEventName, providerMeterId: m.id } satisfies MeterSetup
  })

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`money invariants (${backend})`, () => {
    // the suite's shared service, configured before its tests
    const shared = Layer.effectDiscard(configure()).pipe(Layer.provideMerge(syncLayer({ backend })))

    layer(shared, { excludeTestServices: true })((it) => {
      it.effect("item 2: never sends to a pre-aggregated Stripe meter (it keeps only the newest event per hour/day); the ledger says why", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          const hourly = yield* preAggregatedMeter("pa_hourly", "hour")
          const daily = yield* preAggregatedMeter("pa_daily", "day")
          const raw = yield* meter("pa_raw", { aggregation: "SUM", field: "qty" })
          const c = yield* customer("pa_c1")
          const qtys = ["1.5", "2.25", "4"]
          const events = (prefix: string, hour: number) =>
            [hourly, daily, raw].flatMap((m) =>
              qtys.map((q, i) => ({
                event_id: `${prefix}-${m.eventName}-${i}`,
                event_name: m.eventName,
                external_customer_id: "pa_c1",
                timestamp: hoursAgo(hour, 10 + i),
                properties: { qty: q }
              }))
            )
          yield* ingest([...events("base3", 3), ...events("base2", 2)])
          yield* sync()
          // a late correction for an hour already synced
          yield* ingest(events("late3", 3).map((e) => ({ ...e, properties: { qty: "0.125" } })))
          yield* sync()

          const sentTo = new Set(emulator.state.meterEvents().map((e) => e.meterId))
          expect(sentTo.has(hourly.providerMeterId)).toBe(false)
          expect(sentTo.has(daily.providerMeterId)).toBe(false)
          // the raw meter next to them is unaffected
          expect(yield* stripeTotal(c.stripeId, raw.stripeEventName)).toBe(oracle.sum([...qtys, ...qtys, "0.125", "0.125", "0.125"]))
          const held = (yield* batches).filter((b) => b.meterId === hourly.meterId || b.meterId === daily.meterId)
          expect(held.length).toBe(6) // 2 windows + 1 delta, per meter
          for (const b of held) expect([b.syncStatus, b.skipReason]).toEqual(["skipped", "pre_aggregated_meter"])
          const status = yield* (yield* ApiClient).sync.status()
          expect(status.skipped_by_reason["pre_aggregated_meter"]).toBe(6)
        })
      )
      it.effect("item 11: refuses events stamped more than FLEXPRICE_EVENT_MAX_FUTURE_SECONDS (300) ahead, per event, storing none of them", () =>
        Effect.gen(function* () {
          const api = yield* ApiClient
          const futMeter = { payload: { name: "fut", event_name: "fut", aggregation: { type: "SUM" as const, field: "qty" } } }
          yield* api.meters.create(futMeter)
          yield* customer("fut_c")
          const at = (ms: number) => new Date(Date.now() + ms).toISOString()
          const ev = (id: string, timestamp: string) => ({ event_id: id, event_name: "fut", external_customer_id: "fut_c", timestamp, properties: { qty: "1" } })
          const single = yield* apiError(api.events.ingest({ payload: ev("fut-single", at(6 * 60_000)) }))
          expect(coded(single)).toEqual(["InvalidInput", "timestamp_in_future"])
          expect(single.details).toMatchObject({ event_id: "fut-single" })
          const [bulk, bulkResponse] = yield* api.events.bulk({
            payload: { events: [ev("fut-ok-1", at(-60_000)), ev("fut-bad-1", at(10 * 60_000)), ev("fut-ok-2", at(4 * 60_000)), ev("fut-bad-2", at(400 * 86_400_000))] },
            withResponse: true
          })
          expect(bulkResponse.status).toBe(202)
          expect(bulk.accepted).toBe(2)
          expect(bulk.rejected.map((r) => [r.index, r.event_id, r.code])).toEqual([
            [1, "fut-bad-1", "timestamp_in_future"],
            [3, "fut-bad-2", "timestamp_in_future"]
          ])
          const listed = yield* api.events.list({ urlParams: { external_customer_id: "fut_c" } })
          expect(listed.events.map((e) => e.event_id).sort()).toEqual(["fut-ok-1", "fut-ok-2"])

          // configurable: a wider tolerance accepts what the default refuses (a second service, for this check only)
          yield* Effect.provide(
            Effect.gen(function* () {
              const wide = yield* ApiClient
              yield* wide.meters.create(futMeter)
              const [, ok] = yield* wide.events.ingest({ payload: ev("w-1", at(30 * 60_000)), withResponse: true })
              expect(ok.status).toBe(202)
              const no = yield* apiError(wide.events.ingest({ payload: ev("w-2", at(61 * 60_000)) }))
              expect(coded(no)).toEqual(["InvalidInput", "timestamp_in_future"])
            }),
            TestApp.layer({ backend, env: { FLEXPRICE_EVENT_MAX_FUTURE_SECONDS: "3600" } })
          )
        })
      )
    })

    // FLEXPRICE_WATERMARK_LAG_SECONDS at its default (the shared service runs with 0)
    layer(syncLayer({ backend, env: { FLEXPRICE_WATERMARK_LAG_SECONDS: "2" } }), { excludeTestServices: true })((it) => {
      it.effect("item 8: a manual sync includes every event acknowledged (202) before its request, with the production watermark lag", () =>
        Effect.gen(function* () {
          const api = yield* ApiClient
          yield* configure()
          const m = yield* meter("ryw", { aggregation: "SUM", field: "qty" })
          const c = yield* customer("ryw_c")
          const hourStart = (n: number) => DateTime.unsafeMake(FILE_HOUR - n * HOUR) // the hours hoursAgo names
          const manual = api.sync.manual({ payload: { window_start: hourStart(2), window_end: hourStart(1), dry_run: false }, withResponse: true })
          const sent: Array<string> = []
          const ingestAndSync = (prefix: string, qtys: ReadonlyArray<string>) =>
            Effect.gen(function* () {
              yield* ingest(qtys.map((q, i) => ({ event_id: `${prefix}-${i}`, event_name: "ryw", external_customer_id: "ryw_c", timestamp: hoursAgo(2, 5 + i), properties: { qty: q } })))
              sent.push(...qtys)
              const [res, response] = yield* manual
              expect(response.status).toBe(200)
              expect(res.status).toBe("completed")
              expect(res.windows).toHaveLength(1)
              expect(res.windows[0]).toMatchObject({ groups: 1, quantity: oracle.sum(qtys) })
              expect(res.excluded_events).toBe(0)
              expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe(oracle.sum(sent))
            })
          yield* ingestAndSync("ryw-base", ["3.5", "0.25", "11"])
          // a late event for the hour just synced: in the very next manual sync, as a delta
          yield* ingestAndSync("ryw-late", ["0.001"])
        })
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("item 1: changing aggregation_window_minutes (60 → 15 → 60) never re-sends synced usage; late events become deltas on the grid they were synced on", () =>
        Effect.gen(function* () {
          const api = yield* ApiClient
          const emulator = yield* SyncEmulator
          yield* configure({ windowMinutes: 60 })
          const m = yield* meter("grid", { aggregation: "SUM", field: "qty" })
          const c = yield* customer("grid_c")
          const ingested: Array<string> = []
          let n = 0
          // one clock reading for the whole test, so an hour boundary passing mid-test changes nothing
          const base = Math.floor(Date.now() / HOUR) * HOUR
          const startOf = (hour: number, minute: number) => base - hour * HOUR + minute * 60_000
          const ingestAt = (at: ReadonlyArray<readonly [hour: number, minute: number, qty: string]>) =>
            Effect.gen(function* () {
              yield* ingest(
                at.map(([hour, minute, qty]) => ({ event_id: `grid-${n++}`, event_name: "grid", external_customer_id: "grid_c", timestamp: new Date(startOf(hour, minute)).toISOString(), properties: { qty } }))
              )
              ingested.push(...at.map(([, , q]) => q))
            })
          const syncAndCheck = Effect.gen(function* () {
            const r = yield* sync()
            expect(r.status).toBe("completed")
            expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe(oracle.sum(ingested))
          })
          const setWindow = (minutes: number) =>
            Effect.gen(function* () {
              const [view, response] = yield* api.stripeConfig.putConfig({ payload: { aggregation_window_minutes: minutes }, withResponse: true })
              expect(response.status).toBe(200)
              expect(view.aggregation_window_minutes).toBe(minutes)
            })
          // every quarter of hours -5..-3, synced on 60-minute windows (all far from the open hour,
          // so the test does not depend on the minute it runs at)
          yield* ingestAt([5, 4, 3].flatMap((hour) => [5, 20, 35, 50].map((minute) => [hour, minute, `${hour}.${minute}`] as const)))
          yield* syncAndCheck

          yield* setWindow(15)
          // late events in every quarter of a synced hour, and usage in an hour not synced yet
          yield* ingestAt([[4, 7, "0.5"], [4, 22, "1.25"], [4, 37, "2"], [4, 52, "0.003"], [2, 20, "7"], [2, 40, "8.5"]])
          yield* syncAndCheck
          yield* syncAndCheck
          const minutesOf = (b: { windowStart: Date; windowEnd: Date }) => (b.windowEnd.getTime() - b.windowStart.getTime()) / 60_000
          const inHour = (hour: number) =>
            Effect.map(batches, (all) => all.filter((b) => b.windowStart.getTime() >= startOf(hour, 0) && b.windowStart.getTime() < startOf(hour - 1, 0)))
          // the synced hour kept its 60-minute window (one delta on it); the new hour is cut in quarters
          expect((yield* inHour(4)).map((b) => [minutesOf(b), b.sequence].join("/")).sort()).toEqual(["60/1", "60/2"])
          expect((yield* inHour(2)).map((b) => [b.windowStart.getTime() - startOf(2, 0), minutesOf(b)])).toEqual(
            expect.arrayContaining([[15 * 60_000, 15], [30 * 60_000, 15]])
          )

          yield* setWindow(60)
          // late again: a 60-minute hour, quarters synced at 15 minutes, a quarter never synced
          yield* ingestAt([[4, 25, "0.75"], [2, 25, "3"], [2, 50, "4.125"], [3, 59, "9"]])
          yield* syncAndCheck
          yield* syncAndCheck

          // no meter event was accepted twice, and each one is a window the ledger holds
          const accepted = emulator.state.meterEvents()
          expect(new Set(accepted.map((e) => e.identifier)).size).toBe(accepted.length)
          const synced = (yield* batches).filter((b) => b.syncStatus === "synced")
          expect(accepted.length).toBe(synced.length)
          // ledger windows never overlap unless they are the same window
          const windows = [...new Map(synced.map((b) => [`${b.windowStart.getTime()}`, b])).values()].sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
          for (let i = 1; i < windows.length; i++) expect(windows[i]!.windowStart.getTime()).toBeGreaterThanOrEqual(windows[i - 1]!.windowEnd.getTime())
        })
      )
    })
  })
})

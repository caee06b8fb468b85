/**
 * Money invariants of issue #12 through the real service and the Stripe emulator over HTTP:
 * nothing lost or billed twice when settings change, corrections arrive, or Stripe keeps only
 * part of what it receives. Expected totals are plain BigInt arithmetic on the ingested
 * quantities (test/support/oracle.ts), never values read back from the ledger.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { forEachBackend, startTestApp } from "../support/app.js"
import * as O from "../support/oracle.js"
import { HOUR, hoursAgo, type MeterSetup, startSyncHarness, type SyncHarness } from "./support.js"

/** Expected totals: the shared BigInt oracle (test/support/oracle.ts) on the ingested quantities. */
const oracle = { sum: (values: ReadonlyArray<string>): string => O.format(O.sum(values)) }

/** A meter mapped (through the repository, as a mapping stored before any API check) to a pre-aggregated Stripe meter. */
const preAggregatedMeter = async (h: SyncHarness, name: string, window: "hour" | "day"): Promise<MeterSetup> => {
  const res = await h.app.request("POST", "/v1/meters", { name, event_name: name, aggregation: { type: "SUM", field: "qty" } })
  if (res.status !== 201) throw new Error(`meter create failed: ${res.status} ${res.text}`)
  const stripeEventName = `stripe_${name}`
  const m = await Effect.runPromise(
    h.emulator.createMeter({
      display_name: name,
      event_name: stripeEventName,
      default_aggregation: { formula: "sum" },
      customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
      value_settings: { event_payload_key: "value" },
      // Stripe's documented create parameter (docs.stripe.com/api/billing/meter/create)
      event_time_window: window
    } as Parameters<SyncHarness["emulator"]["createMeter"]>[0])
  )
  expect(m.event_time_window).toBe(window)
  await h.asTenant(
    Effect.flatMap(MeterMappingRepo, (r) =>
      r.upsert({
        meterId: res.data.id,
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
  return { meterId: res.data.id, eventName: name, stripeEventName, providerMeterId: m.id }
}

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`money invariants (${backend})`, () => {
    let h: SyncHarness

    beforeAll(async () => {
      h = await startSyncHarness({ backend })
      await h.configure()
    })
    afterAll(async () => {
      await h?.dispose()
    })

    it("item 2: never sends to a pre-aggregated Stripe meter (it keeps only the newest event per hour/day); the ledger says why", async () => {
      const hourly = await preAggregatedMeter(h, "pa_hourly", "hour")
      const daily = await preAggregatedMeter(h, "pa_daily", "day")
      const raw = await h.meter("pa_raw", { aggregation: "SUM", field: "qty" })
      const c = await h.customer("pa_c1")
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
      await h.ingest([...events("base3", 3), ...events("base2", 2)])
      await h.sync()
      // a late correction for an hour already synced
      await h.ingest(events("late3", 3).map((e) => ({ ...e, properties: { qty: "0.125" } })))
      await h.sync()

      const sentTo = new Set(h.emulator.state.meterEvents().map((e) => e.meterId))
      expect(sentTo.has(hourly.providerMeterId)).toBe(false)
      expect(sentTo.has(daily.providerMeterId)).toBe(false)
      // the raw meter next to them is unaffected
      expect(h.stripeTotal(c.stripeId!, raw.stripeEventName)).toBe(oracle.sum([...qtys, ...qtys, "0.125", "0.125", "0.125"]))
      const held = (await h.batches()).filter((b) => b.meterId === hourly.meterId || b.meterId === daily.meterId)
      expect(held.length).toBe(6) // 2 windows + 1 delta, per meter
      for (const b of held) expect([b.syncStatus, b.skipReason]).toEqual(["skipped", "pre_aggregated_meter"])
      const status = await h.app.request("GET", "/v1/stripe/sync/status")
      expect(status.data.skipped_by_reason.pre_aggregated_meter).toBe(6)
    })
    it("item 11: refuses events stamped more than FLEXPRICE_EVENT_MAX_FUTURE_SECONDS (300) ahead, per event, storing none of them", async () => {
      await h.app.request("POST", "/v1/meters", { name: "fut", event_name: "fut", aggregation: { type: "SUM", field: "qty" } })
      await h.customer("fut_c")
      const at = (ms: number) => new Date(Date.now() + ms).toISOString()
      const ev = (id: string, timestamp: string) => ({ event_id: id, event_name: "fut", external_customer_id: "fut_c", timestamp, properties: { qty: "1" } })
      const single = await h.app.request("POST", "/v1/events", ev("fut-single", at(6 * 60_000)))
      expect(single.status).toBe(400)
      expect(single.error.code).toBe("timestamp_in_future")
      expect(single.error.details).toMatchObject({ event_id: "fut-single" })
      const bulk = await h.app.request("POST", "/v1/events/bulk", {
        events: [ev("fut-ok-1", at(-60_000)), ev("fut-bad-1", at(10 * 60_000)), ev("fut-ok-2", at(4 * 60_000)), ev("fut-bad-2", at(400 * 86_400_000))]
      })
      expect(bulk.status).toBe(202)
      expect(bulk.data.accepted).toBe(2)
      expect(bulk.data.rejected.map((r) => [r.index, r.event_id, r.code])).toEqual([
        [1, "fut-bad-1", "timestamp_in_future"],
        [3, "fut-bad-2", "timestamp_in_future"]
      ])
      const listed = await h.app.request("GET", "/v1/events?external_customer_id=fut_c")
      expect(listed.data.events.map((e) => e.event_id).sort()).toEqual(["fut-ok-1", "fut-ok-2"])

      // configurable: a wider tolerance accepts what the default refuses
      const wide = await startTestApp({ backend, env: { FLEXPRICE_EVENT_MAX_FUTURE_SECONDS: "3600" } })
      try {
        await wide.request("POST", "/v1/meters", { name: "fut", event_name: "fut", aggregation: { type: "SUM", field: "qty" } })
        const ok = await wide.request("POST", "/v1/events", ev("w-1", at(30 * 60_000)))
        expect(ok.status).toBe(202)
        const no = await wide.request("POST", "/v1/events", ev("w-2", at(61 * 60_000)))
        expect([no.status, no.error.code]).toEqual([400, "timestamp_in_future"])
      } finally {
        await wide.dispose()
      }
    })
    it("item 8: a manual sync includes every event acknowledged (202) before its request, with the production watermark lag", async () => {
      // FLEXPRICE_WATERMARK_LAG_SECONDS at its default (the shared harness runs with 0)
      const lagged = await startSyncHarness({ backend, env: { FLEXPRICE_WATERMARK_LAG_SECONDS: "2" } })
      try {
        await lagged.configure()
        const m = await lagged.meter("ryw", { aggregation: "SUM", field: "qty" })
        const c = await lagged.customer("ryw_c")
        const hourStart = (n: number) => new Date(Math.floor(Date.now() / HOUR) * HOUR - n * HOUR).toISOString()
        const manual = () => lagged.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart(2), window_end: hourStart(1) })
        const sent: Array<string> = []
        const ingestAndSync = async (prefix: string, qtys: ReadonlyArray<string>) => {
          await lagged.ingest(qtys.map((q, i) => ({ event_id: `${prefix}-${i}`, event_name: "ryw", external_customer_id: "ryw_c", timestamp: hoursAgo(2, 5 + i), properties: { qty: q } })))
          sent.push(...qtys)
          const res = await manual()
          expect(res.status).toBe(200)
          expect(res.data.status).toBe("completed")
          expect(res.data.windows).toHaveLength(1)
          expect(res.data.windows[0]).toMatchObject({ groups: 1, quantity: oracle.sum(qtys) })
          expect(res.data.excluded_events).toBe(0)
          expect(lagged.stripeTotal(c.stripeId!, m.stripeEventName)).toBe(oracle.sum(sent))
        }
        await ingestAndSync("ryw-base", ["3.5", "0.25", "11"])
        // a late event for the hour just synced: in the very next manual sync, as a delta
        await ingestAndSync("ryw-late", ["0.001"])
      } finally {
        await lagged.dispose()
      }
    })
    it("item 1: changing aggregation_window_minutes (60 → 15 → 60) never re-sends synced usage; late events become deltas on the grid they were synced on", async () => {
      const g = await startSyncHarness({ backend })
      try {
        await g.configure({ windowMinutes: 60 })
        const m = await g.meter("grid", { aggregation: "SUM", field: "qty" })
        const c = await g.customer("grid_c")
        const ingested: Array<string> = []
        let n = 0
        // one clock reading for the whole test, so an hour boundary passing mid-test changes nothing
        const base = Math.floor(Date.now() / HOUR) * HOUR
        const startOf = (hour: number, minute: number) => base - hour * HOUR + minute * 60_000
        const ingest = async (at: ReadonlyArray<readonly [hour: number, minute: number, qty: string]>) => {
          await g.ingest(
            at.map(([hour, minute, qty]) => ({ event_id: `grid-${n++}`, event_name: "grid", external_customer_id: "grid_c", timestamp: new Date(startOf(hour, minute)).toISOString(), properties: { qty } }))
          )
          ingested.push(...at.map(([, , q]) => q))
        }
        const syncAndCheck = async () => {
          const r = await g.sync()
          expect(r.status).toBe("completed")
          expect(g.stripeTotal(c.stripeId!, m.stripeEventName)).toBe(oracle.sum(ingested))
        }
        const setWindow = async (minutes: number) => {
          const res = await g.app.request("PUT", "/v1/stripe/config", { aggregation_window_minutes: minutes })
          expect(res.status).toBe(200)
          expect(res.data.aggregation_window_minutes).toBe(minutes)
        }
        // every quarter of hours -5..-3, synced on 60-minute windows (all far from the open hour,
        // so the test does not depend on the minute it runs at)
        await ingest([5, 4, 3].flatMap((hour) => [5, 20, 35, 50].map((minute) => [hour, minute, `${hour}.${minute}`] as const)))
        await syncAndCheck()

        await setWindow(15)
        // late events in every quarter of a synced hour, and usage in an hour not synced yet
        await ingest([[4, 7, "0.5"], [4, 22, "1.25"], [4, 37, "2"], [4, 52, "0.003"], [2, 20, "7"], [2, 40, "8.5"]])
        await syncAndCheck()
        await syncAndCheck()
        const minutesOf = (b: { windowStart: Date; windowEnd: Date }) => (b.windowEnd.getTime() - b.windowStart.getTime()) / 60_000
        const inHour = async (hour: number) => (await g.batches()).filter((b) => b.windowStart.getTime() >= startOf(hour, 0) && b.windowStart.getTime() < startOf(hour - 1, 0))
        // the synced hour kept its 60-minute window (one delta on it); the new hour is cut in quarters
        expect((await inHour(4)).map((b) => [minutesOf(b), b.sequence].join("/")).sort()).toEqual(["60/1", "60/2"])
        expect((await inHour(2)).map((b) => [b.windowStart.getTime() - startOf(2, 0), minutesOf(b)])).toEqual(
          expect.arrayContaining([[15 * 60_000, 15], [30 * 60_000, 15]])
        )

        await setWindow(60)
        // late again: a 60-minute hour, quarters synced at 15 minutes, a quarter never synced
        await ingest([[4, 25, "0.75"], [2, 25, "3"], [2, 50, "4.125"], [3, 59, "9"]])
        await syncAndCheck()
        await syncAndCheck()

        // no meter event was accepted twice, and each one is a window the ledger holds
        const accepted = g.emulator.state.meterEvents()
        expect(new Set(accepted.map((e) => e.identifier)).size).toBe(accepted.length)
        const batches = (await g.batches()).filter((b) => b.syncStatus === "synced")
        expect(accepted.length).toBe(batches.length)
        // ledger windows never overlap unless they are the same window
        const windows = [...new Map(batches.map((b) => [`${b.windowStart.getTime()}`, b])).values()].sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
        for (let i = 1; i < windows.length; i++) expect(windows[i]!.windowStart.getTime()).toBeGreaterThanOrEqual(windows[i - 1]!.windowEnd.getTime())
      } finally {
        await g.dispose()
      }
    })
  })
})

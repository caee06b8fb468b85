/**
 * Issue #12 item 7 (c): Stripe accepts meter event timestamps "within the past 35 calendar days"
 * (https://docs.stripe.com/api/billing/meter-event/create, `timestamp`). The horizon is checked by
 * the clock at send, not only when the page is prepared: a batch inside it when its page was
 * prepared but past it when its chunk goes out (a page waits behind the one ahead, back-off,
 * retries) is skipped `too_late`, never sent — v1 would refuse it, and the stream would accept
 * it and drop it later while the ledger marked it synced.
 *
 * The run's clock is the real one shifted by an offset (sleeps stay real); the pause point
 * right before a chunk is sent (PushHook) moves it three hours on. The emulator reads the same
 * shifted clock.
 */
import { layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { expect } from "vitest"
import { PushHook } from "../../src/sync/Push.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayerOnClock } from "./syncLayer.js"

const MINUTE = 60_000
const DAY = 24 * 60 * MINUTE

/** The real clock plus a movable offset. */
const shiftedClock = () => {
  const real = Clock.make()
  let offset = 0
  const now = () => real.unsafeCurrentTimeMillis() + offset
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: now,
    currentTimeMillis: Effect.sync(now),
    unsafeCurrentTimeNanos: () => BigInt(now()) * 1_000_000n,
    currentTimeNanos: Effect.sync(() => BigInt(now()) * 1_000_000n),
    sleep: (d) => real.sleep(d)
  }
  return { clock, now, advance: (ms: number) => void (offset += ms) }
}

forEachBackend(["pglite", "postgres"], (backend) => {
  for (const transport of ["stream", "v1"] as const) {
    // one service per transport, on its own shifted clock (the emulator's too)
    const time = shiftedClock()
    layer(syncLayerOnClock(time.now, { backend }), { excludeTestServices: true })(`send-time horizon (${transport} transport, ${backend})`, (it) => {
      it.effect("a batch prepared inside Stripe's 35 days and sent after them is skipped too_late, not sent", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure({ transport })
          const m = yield* meter("calls", { aggregation: "SUM", field: "qty" })
          const { stripeId } = yield* customer("c1")
          // Its hour starts 90–150 minutes inside the horizon: created sendable (the create margin is
          // 60 minutes) and within the send margin (5 minutes) when its page is prepared.
          const nearHorizon = new Date(time.now() - 35 * DAY + 150 * MINUTE).toISOString()
          yield* ingest([
            { event_id: "old", event_name: "calls", external_customer_id: "c1", timestamp: nearHorizon, properties: { qty: "7" } },
            { event_id: "new", event_name: "calls", external_customer_id: "c1", timestamp: hoursAgo(2), properties: { qty: "1.5" } }
          ])
          let paused = 0
          const hook = {
            beforeChunk: () =>
              Effect.sync(() => {
                // the first chunk waits three hours (behind a page ahead, back-off, retries)
                if (paused++ === 0) time.advance(3 * 60 * MINUTE)
              })
          }
          const report = yield* sync().pipe(Effect.provideService(PushHook, hook), Effect.withClock(time.clock))
          expect(paused).toBeGreaterThan(0)
          expect(report.batchesFailed).toBe(0)
          expect(report.batchesSynced).toBe(1)
          const ledger = [...(yield* batches)].sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
          expect(ledger.map((b) => [b.aggregatedQuantity, b.syncStatus, b.skipReason])).toEqual([
            ["7", "skipped", "too_late"],
            ["1.5", "synced", null]
          ])
          // nothing stamped past the horizon reached Stripe: not accepted, not refused, not dropped
          expect(emulator.state.meterEvents().map((e) => e.value)).toEqual(["1.5"])
          expect(emulator.state.streamErrors()).toEqual([])
          if (transport === "v1") expect(emulator.callCounts()["POST /v1/billing/meter_events"]).toBe(1)
          expect(O.compare(yield* stripeTotal(stripeId, m.stripeEventName), "1.5")).toBe(0)
        })
      )
    })
  }
})

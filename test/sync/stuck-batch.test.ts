/**
 * Issue #12 item 4: on v1, one batch that Stripe answers with 500s must neither stall for a day
 * (Stripe saves a 500 under its Idempotency-Key and replays it for 24 h,
 * https://docs.stripe.com/api/idempotent_requests) nor hold back the batches queued behind it.
 * Expected totals are plain BigInt sums of the ingested quantities (test/support/oracle.ts).
 */
import { afterEach, describe, expect, it } from "vitest"
import { Effect } from "effect"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

const V1_PATH = "/v1/billing/meter_events"

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`a batch Stripe answers with 500s (v1, ${backend})`, () => {
    let h: SyncHarness | undefined
    afterEach(async () => {
      await h?.dispose()
      h = undefined
    })

    it("stays pending without blocking the batches behind it, and the next run sends it once under a new key", async () => {
      // One push at a time, so the older batch is the first request Stripe sees.
      h = await startSyncHarness({ backend, env: { FLEXPRICE_SYNC_PUSH_CONCURRENCY: "1" } })
      await h.configure({ transport: "v1" })
      const meter = await h.meter("calls", { aggregation: "SUM", field: "qty" })
      const { stripeId } = await h.customer("c1")
      const older = ["2.5", "1.25"]
      const newer = ["4", "0.5"]
      await h.ingest([
        ...older.map((qty, i) => ({ event_id: `o${i}`, event_name: "calls", external_customer_id: "c1", timestamp: hoursAgo(3, 10 + i), properties: { qty } })),
        ...newer.map((qty, i) => ({ event_id: `n${i}`, event_name: "calls", external_customer_id: "c1", timestamp: hoursAgo(2, 10 + i), properties: { qty } }))
      ])
      // Every attempt of the first call (1 + 3 client retries) is answered 500, each one saved
      // by Stripe under that attempt's Idempotency-Key.
      await Effect.runPromise(h.emulator.setFaults({ failNext: { count: 4, kind: "server_error", status: 500 }, paths: [V1_PATH] }))

      const first = await h.sync()
      expect(first.status).toBe("partial")
      expect(first.error).toBe("stripe_unavailable")
      expect(first.batchesFailed).toBe(0)
      const afterFirst = [...(await h.batches())].sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
      expect(afterFirst.map((b) => b.syncStatus)).toEqual(["pending", "synced"])
      expect(afterFirst[0]!.errorCode).toBe("stripe_unavailable")
      // the batch behind the failing one went out in the same run
      expect(O.compare(h.stripeTotal(stripeId!, meter.stripeEventName), O.sum(newer))).toBe(0)
      expect(h.emulator.statusCounts()["500"]).toBe(4)

      const callsBefore = h.emulator.callCounts()[`POST ${V1_PATH}`] ?? 0
      const second = await h.sync()
      expect(second.status).toBe("completed")
      expect(second.batchesSynced).toBe(1)
      // One request, executed: no saved 500 replayed to it.
      expect((h.emulator.callCounts()[`POST ${V1_PATH}`] ?? 0) - callsBefore).toBe(1)
      expect(h.emulator.statusCounts()["500"]).toBe(4)
      expect((await h.batches()).every((b) => b.syncStatus === "synced")).toBe(true)
      expect(O.compare(h.stripeTotal(stripeId!, meter.stripeEventName), O.sum([...older, ...newer]))).toBe(0)
      expect(h.emulator.state.meterEvents().length).toBe(2)
    })
  })
})

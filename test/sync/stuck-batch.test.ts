/**
 * Issue #12 item 4: on v1, one batch that Stripe answers with 500s must neither stall for a day
 * (Stripe saves a 500 under its Idempotency-Key and replays it for 24 h,
 * https://docs.stripe.com/api/idempotent_requests) nor hold back the batches queued behind it.
 * Expected totals are plain BigInt sums of the ingested quantities (test/support/oracle.ts).
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

const V1_PATH = "/v1/billing/meter_events"

forEachBackend(["pglite", "postgres"], (backend) =>
  // One push at a time, so the older batch is the first request Stripe sees.
  layer(syncLayer({ backend, env: { FLEXPRICE_SYNC_PUSH_CONCURRENCY: "1" } }), { excludeTestServices: true })(`a batch Stripe answers with 500s (v1, ${backend})`, (it) => {
    it.effect("stays pending without blocking the batches behind it, and the next run sends it once under a new key", () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        yield* configure({ transport: "v1" })
        const m = yield* meter("calls", { aggregation: "SUM", field: "qty" })
        const { stripeId } = yield* customer("c1")
        const older = ["2.5", "1.25"]
        const newer = ["4", "0.5"]
        yield* ingest([
          ...older.map((qty, i) => ({ event_id: `o${i}`, event_name: "calls", external_customer_id: "c1", timestamp: hoursAgo(3, 10 + i), properties: { qty } })),
          ...newer.map((qty, i) => ({ event_id: `n${i}`, event_name: "calls", external_customer_id: "c1", timestamp: hoursAgo(2, 10 + i), properties: { qty } }))
        ])
        // Every attempt of the first call (1 + 3 client retries) is answered 500, each one saved
        // by Stripe under that attempt's Idempotency-Key.
        yield* emulator.setFaults({ failNext: { count: 4, kind: "server_error", status: 500 }, paths: [V1_PATH] })

        const first = yield* sync()
        expect(first.status).toBe("partial")
        expect(first.error).toBe("stripe_unavailable")
        expect(first.batchesFailed).toBe(0)
        const afterFirst = [...(yield* batches)].sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
        expect(afterFirst.map((b) => b.syncStatus)).toEqual(["pending", "synced"])
        expect(afterFirst[0]!.errorCode).toBe("stripe_unavailable")
        // the batch behind the failing one went out in the same run
        expect(O.compare(yield* stripeTotal(stripeId, m.stripeEventName), O.sum(newer))).toBe(0)
        expect(emulator.statusCounts()["500"]).toBe(4)

        const callsBefore = emulator.callCounts()[`POST ${V1_PATH}`] ?? 0
        const second = yield* sync()
        expect(second.status).toBe("completed")
        expect(second.batchesSynced).toBe(1)
        // One request, executed: no saved 500 replayed to it.
        expect((emulator.callCounts()[`POST ${V1_PATH}`] ?? 0) - callsBefore).toBe(1)
        expect(emulator.statusCounts()["500"]).toBe(4)
        expect((yield* batches).every((b) => b.syncStatus === "synced")).toBe(true)
        expect(O.compare(yield* stripeTotal(stripeId, m.stripeEventName), O.sum([...older, ...newer]))).toBe(0)
        expect(emulator.state.meterEvents().length).toBe(2)
      })
    )
  })
)

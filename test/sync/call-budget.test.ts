/**
 * The requirements' call budget ("fewer than 100 Stripe API calls per hour per tenant") is
 * counted per tenant: v1 makes one call per aggregate, the v2 stream ⌈aggregates / 100⌉ requests
 * (plus its session). Beyond the budget nothing is held back: every aggregate is sent and the
 * trailing-hour gauge (what SyncStripeCallBudget alerts on) shows the overrun.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import * as O from "../support/oracle.js"
import { inTestTenant } from "../support/TestApp.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { reconcileAllTenants } from "../../src/sync/ScheduledReconciliation.js"
import { hoursAgo } from "./support.js"
import { configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

/** The sync service over the in-memory metric reader (the tests run in order on one service). */
const observed = syncLayer().pipe(Layer.provideMerge(Telemetry.layerTest))

const value = (name: string) => Effect.flatMap(TelemetryTest, (t) => t.metricValue(name))

/** One customer, one meter, one event in each of `hours` distinct past hours → `hours` aggregates. */
const usageOverHours = (name: string, hours: number) =>
  Effect.gen(function* () {
    const m = yield* meter(name, { aggregation: "COUNT" })
    const c = yield* customer(`${name}-c`)
    yield* ingest(
      Array.from({ length: hours }, (_, i) => ({
        event_id: `${name}-${i}`,
        event_name: m.eventName,
        external_customer_id: `${name}-c`,
        timestamp: hoursAgo(2 + i)
      }))
    )
    return { m, c }
  })

layer(observed, { excludeTestServices: true })("Stripe call budget per tenant", (it) => {
  it.effect(
    "v1: one call per aggregate, all sent beyond 100; stream: ⌈aggregates/100⌉; the gauge sums the tenant's hour",
    () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        yield* configure({ transport: "v1" })
        const before = emulator.totalCalls()
        const v1Aggregates = 101
        const v1 = yield* usageOverHours("budget_v1", v1Aggregates)
        const r1 = yield* sync()
        expect(r1.status).toBe("completed")
        expect(r1.batchesSynced).toBe(v1Aggregates)
        expect(r1.stripeRequests).toBe(v1Aggregates)
        // over budget, still all delivered
        expect(yield* stripeTotal(v1.c.stripeId, v1.m.stripeEventName)).toBe(String(v1Aggregates))
        // 101 calls for one (customer, meter), never two in flight at once (Stripe refuses the second)
        expect(emulator.v1ConcurrentSameCustomerMeter()).toBe(0)
        expect(emulator.state.received().map((r) => r.outcome)).toEqual(Array(v1Aggregates).fill("accepted"))
        const v1Received = emulator.totalCalls() - before
        expect(v1Received).toBeGreaterThanOrEqual(v1Aggregates)
        expect(yield* value("flexprice_sync_stripe_requests_last_hour")).toBe(v1Received)

        yield* configure({ transport: "stream" })
        const streamAggregates = 201
        const st = yield* usageOverHours("budget_stream", streamAggregates)
        const r2 = yield* sync()
        expect(r2.status).toBe("completed")
        expect(r2.batchesSynced).toBe(streamAggregates)
        const streamRequests = Number((BigInt(streamAggregates) + 99n) / 100n)
        expect(r2.stripeRequests).toBe(streamRequests)
        expect(yield* stripeTotal(st.c.stripeId, st.m.stripeEventName)).toBe(O.format(O.sum(Array(streamAggregates).fill("1"))))
        // the same tenant's trailing hour: both runs, every request Stripe received (the stream's
        // session included), counted independently by the emulator
        const received = emulator.totalCalls() - before
        expect(received).toBeGreaterThanOrEqual(v1Aggregates + streamRequests)
        expect(yield* value("flexprice_sync_stripe_requests_last_hour")).toBe(received)
        expect(yield* value("flexprice_sync_stripe_requests_total")).toBe(received)
      }),
    300_000
  )

  it.effect(
    "the resend guard's summary reads past Stripe's 24 h dedup horizon are spent too",
    () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const { m, c } = yield* usageOverHours("budget_guard", 1)
        yield* sync()
        // delivered, but the process died before marking it; Stripe's dedup memory is gone
        yield* Effect.flatMap(PgClient.PgClient, (sql) =>
          sql.unsafe(`UPDATE stripe_sync_batches SET sync_status = 'sending', synced_at = NULL,
            first_sent_at = now() - interval '25 hours' WHERE customer_id = '${c.customerId}'`)
        )
        emulator.advanceClock(25 * 3_600_000)
        const total = yield* value("flexprice_sync_stripe_requests_total")
        const calls = emulator.totalCalls()
        const run = yield* sync()
        const made = emulator.totalCalls() - calls
        expect(made).toBeGreaterThanOrEqual(1) // the summary read, nothing resent
        expect(run.stripeRequests).toBe(0)
        expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe("1")
        expect(yield* value("flexprice_sync_stripe_requests_total")).toBe(total + made)
      }),
    120_000
  )

  it.effect(
    "scheduled reconciliation's Stripe reads are spent from the same budget",
    () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const lastHour = yield* value("flexprice_sync_stripe_requests_last_hour")
        const total = yield* value("flexprice_sync_stripe_requests_total")
        const calls = emulator.totalCalls()
        yield* inTestTenant(reconcileAllTenants({ intervalSeconds: 3600, lookbackHours: 840, settleSeconds: 0 }))
        // what Stripe (the emulator) received, pages of summaries for both pairs synced above
        const made = emulator.totalCalls() - calls
        expect(made).toBeGreaterThanOrEqual(2)
        expect(yield* value("flexprice_sync_stripe_requests_last_hour")).toBe(lastHour + made)
        expect(yield* value("flexprice_sync_stripe_requests_total")).toBe(total + made)
      }),
    120_000
  )
})

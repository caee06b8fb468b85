/**
 * The requirements' call budget ("fewer than 100 Stripe API calls per hour per tenant") is
 * counted per tenant: v1 makes one call per aggregate, the v2 stream ⌈aggregates / 100⌉ requests
 * (plus its session). Beyond the budget nothing is held back: every aggregate is sent and the
 * trailing-hour gauge (what SyncStripeCallBudget alerts on) shows the overrun.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as O from "../support/oracle.js"
import { Telemetry, TelemetryTest, type TelemetryTestService } from "../../src/observability/Telemetry.js"
import { reconcileAllTenants } from "../../src/sync/ScheduledReconciliation.js"
import { hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

describe("Stripe call budget per tenant", () => {
  let h: SyncHarness
  let telemetry: TelemetryTestService | undefined
  const value = (name: string) => Effect.runPromise(telemetry!.metricValue(name))
  beforeAll(async () => {
    const capture = Layer.effectDiscard(Effect.map(TelemetryTest, (t) => void (telemetry = t)))
    h = await startSyncHarness({ extra: capture.pipe(Layer.provide(Telemetry.layerTest)) })
  })
  afterAll(async () => {
    await h?.dispose()
  })

  /** One customer, one meter, one event in each of `hours` distinct past hours → `hours` aggregates. */
  const usageOverHours = async (name: string, hours: number) => {
    const m = await h.meter(name, { aggregation: "COUNT" })
    const c = await h.customer(`${name}-c`)
    await h.ingest(
      Array.from({ length: hours }, (_, i) => ({
        event_id: `${name}-${i}`,
        event_name: m.eventName,
        external_customer_id: `${name}-c`,
        timestamp: hoursAgo(2 + i)
      }))
    )
    return { m, c }
  }

  it("v1: one call per aggregate, all sent beyond 100; stream: ⌈aggregates/100⌉; the gauge sums the tenant's hour", async () => {
    await h.configure({ transport: "v1" })
    const before = h.emulator.totalCalls()
    const v1Aggregates = 101
    const v1 = await usageOverHours("budget_v1", v1Aggregates)
    const r1 = await h.sync()
    expect(r1.status).toBe("completed")
    expect(r1.batchesSynced).toBe(v1Aggregates)
    expect(r1.stripeRequests).toBe(v1Aggregates)
    // over budget, still all delivered
    expect(h.stripeTotal(v1.c.stripeId!, v1.m.stripeEventName)).toBe(String(v1Aggregates))
    // 101 calls for one (customer, meter), never two in flight at once (Stripe refuses the second)
    expect(h.emulator.v1ConcurrentSameCustomerMeter()).toBe(0)
    expect(h.emulator.state.received().map((r) => r.outcome)).toEqual(Array(v1Aggregates).fill("accepted"))
    const v1Received = h.emulator.totalCalls() - before
    expect(v1Received).toBeGreaterThanOrEqual(v1Aggregates)
    expect(await value("flexprice_sync_stripe_requests_last_hour")).toBe(v1Received)

    await h.configure({ transport: "stream" })
    const streamAggregates = 201
    const st = await usageOverHours("budget_stream", streamAggregates)
    const r2 = await h.sync()
    expect(r2.status).toBe("completed")
    expect(r2.batchesSynced).toBe(streamAggregates)
    const streamRequests = Number((BigInt(streamAggregates) + 99n) / 100n)
    expect(r2.stripeRequests).toBe(streamRequests)
    expect(h.stripeTotal(st.c.stripeId!, st.m.stripeEventName)).toBe(O.format(O.sum(Array(streamAggregates).fill("1"))))
    // the same tenant's trailing hour: both runs, every request Stripe received (the stream's
    // session included), counted independently by the emulator
    const received = h.emulator.totalCalls() - before
    expect(received).toBeGreaterThanOrEqual(v1Aggregates + streamRequests)
    expect(await value("flexprice_sync_stripe_requests_last_hour")).toBe(received)
    expect(await value("flexprice_sync_stripe_requests_total")).toBe(received)
  }, 300_000)

  it("the resend guard's summary reads past Stripe's 24 h dedup horizon are spent too", async () => {
    const { m, c } = await usageOverHours("budget_guard", 1)
    await h.sync()
    // delivered, but the process died before marking it; Stripe's dedup memory is gone
    await h.app.run(
      Effect.flatMap(PgClient.PgClient, (sql) =>
        sql.unsafe(`UPDATE stripe_sync_batches SET sync_status = 'sending', synced_at = NULL,
          first_sent_at = now() - interval '25 hours' WHERE customer_id = '${c.customerId}'`)
      )
    )
    h.emulator.advanceClock(25 * 3_600_000)
    const total = await value("flexprice_sync_stripe_requests_total")
    const calls = h.emulator.totalCalls()
    const run = await h.sync()
    const made = h.emulator.totalCalls() - calls
    expect(made).toBeGreaterThanOrEqual(1) // the summary read, nothing resent
    expect(run.stripeRequests).toBe(0)
    expect(h.stripeTotal(c.stripeId!, m.stripeEventName)).toBe("1")
    expect(await value("flexprice_sync_stripe_requests_total")).toBe(total + made)
  }, 120_000)

  it("scheduled reconciliation's Stripe reads are spent from the same budget", async () => {
    const lastHour = await value("flexprice_sync_stripe_requests_last_hour")
    const total = await value("flexprice_sync_stripe_requests_total")
    const calls = h.emulator.totalCalls()
    await h.asTenant(reconcileAllTenants({ intervalSeconds: 3600, lookbackHours: 840, settleSeconds: 0 }))
    // what Stripe (the emulator) received, pages of summaries for both pairs synced above
    const made = h.emulator.totalCalls() - calls
    expect(made).toBeGreaterThanOrEqual(2)
    expect(await value("flexprice_sync_stripe_requests_last_hour")).toBe(lastHour + made)
    expect(await value("flexprice_sync_stripe_requests_total")).toBe(total + made)
  }, 120_000)
})

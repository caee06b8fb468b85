/**
 * The requirements' call budget ("fewer than 100 Stripe API calls per hour per tenant") is
 * counted per tenant: v1 makes one call per aggregate, the v2 stream ⌈aggregates / 100⌉ requests
 * (plus its session). Beyond the budget nothing is held back: every aggregate is sent and the
 * trailing-hour gauge (what SyncStripeCallBudget alerts on) shows the overrun.
 */
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
    expect(await value("flexprice_sync_stripe_requests_last_hour")).toBe(v1Aggregates)

    await h.configure({ transport: "stream" })
    const streamAggregates = 201
    const st = await usageOverHours("budget_stream", streamAggregates)
    const r2 = await h.sync()
    expect(r2.status).toBe("completed")
    expect(r2.batchesSynced).toBe(streamAggregates)
    const streamRequests = Number((BigInt(streamAggregates) + 99n) / 100n)
    expect(r2.stripeRequests).toBe(streamRequests)
    expect(h.stripeTotal(st.c.stripeId!, st.m.stripeEventName)).toBe(O.format(O.sum(Array(streamAggregates).fill("1"))))
    // the same tenant's trailing hour: both runs
    expect(await value("flexprice_sync_stripe_requests_last_hour")).toBe(v1Aggregates + streamRequests)
    expect(await value("flexprice_sync_stripe_requests_total")).toBe(v1Aggregates + streamRequests)
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

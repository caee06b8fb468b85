/**
 * Issue 7's end-to-end check: a small sync under injected faults, observed through the
 * in-memory OpenTelemetry metric reader — retries are counted, synced batches equal the
 * aggregate groups, the breaker's open/close transitions are recorded — and neither the
 * exported metrics nor the spans contain the Stripe key.
 */
import { Effect, Layer } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { Telemetry, TelemetryTest, type TelemetryTestService } from "../../src/observability/Telemetry.js"
import * as O from "../support/oracle.js"
import { breakerAdmits, expectTotals, seedUsage, startSyncHarness, STRIPE_KEY, syncUntilSettled, type SyncHarness } from "../sync/support.js"

describe("sync metrics under faults", () => {
  let h: SyncHarness | undefined
  afterAll(async () => {
    await h?.dispose()
  })

  it("counts retries, synced batches = groups, and breaker transitions; no secret exported", async () => {
    let telemetry: TelemetryTestService | undefined
    const capture = Layer.effectDiscard(Effect.map(TelemetryTest, (t) => void (telemetry = t)))
    h = await startSyncHarness({
      env: { STRIPE_BREAKER_CONSECUTIVE_FAILURES: "2" },
      extra: capture.pipe(Layer.provide(Telemetry.layerTest))
    })
    const t = () => telemetry!
    const value = (name: string, tags?: Record<string, string>) => Effect.runPromise(t().metricValue(name, tags))
    // metrics are process-global: compare before/after
    const before = {
      retries: await value("flexprice_stripe_retries_total"),
      synced: await value("flexprice_sync_batches_total", { status: "synced" }),
      opened: await value("flexprice_stripe_circuit_transitions_total", { to: "open" }),
      closed: await value("flexprice_stripe_circuit_transitions_total", { to: "closed" })
    }
    await h.configure()
    // one window, so each (customer, meter) pair with usage is exactly one aggregate group
    const { expected } = await seedUsage(h, { customers: 6, events: 80, seed: 7, hours: [2] })
    const groups = [...expected.values()].filter((sum) => O.compare(sum, "0") !== 0).length
    // an outage opens the breaker (batches stay pending, nothing failed) ...
    await Effect.runPromise(h.emulator.setFaults({ outageForMs: 60_000 }))
    // (each run's push fails once after its retries; two consecutive failures open the breaker)
    for (const during of [await h.sync(), await h.sync()]) expect(during.batchesSynced).toBe(0)
    expect((await h.batches()).every((b) => b.syncStatus === "pending")).toBe(true)
    // ... then Stripe is back but rate limits twice: the client retries, the breaker closes
    await breakerAdmits(h)
    await Effect.runPromise(h.emulator.setFaults({ failNext: { count: 2, kind: "rate_limit" }, paths: ["/v2/billing"] }))
    const reports = await syncUntilSettled(h, 40, () => breakerAdmits(h!))
    expect(reports.length).toBeGreaterThan(0)
    expect(expectTotals(h, expected)).toEqual([])

    const batches = await h.batches()
    const synced = batches.filter((b) => b.syncStatus === "synced").length
    expect(synced).toBe(groups)
    const after = {
      retries: await value("flexprice_stripe_retries_total"),
      synced: await value("flexprice_sync_batches_total", { status: "synced" }),
      opened: await value("flexprice_stripe_circuit_transitions_total", { to: "open" }),
      closed: await value("flexprice_stripe_circuit_transitions_total", { to: "closed" })
    }
    expect(after.retries - before.retries).toBeGreaterThan(0)
    expect(after.synced - before.synced).toBe(synced)
    expect(after.opened - before.opened).toBeGreaterThan(0)
    expect(after.closed - before.closed).toBeGreaterThan(0)

    const exported = await Effect.runPromise(t().prometheusText)
    expect(exported).toContain("flexprice_sync_batches_total")
    expect(exported).not.toContain(STRIPE_KEY)
    const spans = await Effect.runPromise(t().spans)
    expect(JSON.stringify(spans.map((s) => [s.name, s.attributes, s.events]))).not.toContain(STRIPE_KEY)
  })
})

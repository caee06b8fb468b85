/**
 * Issue 7's end-to-end check: a small sync under injected faults, observed through the
 * in-memory OpenTelemetry metric reader — retries are counted, synced batches equal the
 * aggregate groups, the breaker's open/close transitions are recorded — and neither the
 * exported metrics nor the spans contain the Stripe key.
 */
import { layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import * as O from "../support/oracle.js"
import { STRIPE_KEY } from "../sync/support.js"
import { batches, breakerAdmits, configure, expectTotals, seedUsage, sync, SyncEmulator, syncLayer, syncUntilSettled } from "../sync/syncLayer.js"

/** The sync service over the in-memory exporter and metric reader. */
const observed = syncLayer({ env: { STRIPE_BREAKER_CONSECUTIVE_FAILURES: "2" } }).pipe(Layer.provideMerge(Telemetry.layerTest))

layer(observed, { excludeTestServices: true })("sync metrics under faults", (it) => {
  it.effect("counts retries, synced batches = groups, and breaker transitions; no secret exported", () =>
    Effect.gen(function* () {
      const telemetry = yield* TelemetryTest
      const emulator = yield* SyncEmulator
      // metrics are process-global: compare before/after
      const counters = Effect.all({
        retries: telemetry.metricValue("flexprice_stripe_retries_total"),
        synced: telemetry.metricValue("flexprice_sync_batches_total", { status: "synced" }),
        opened: telemetry.metricValue("flexprice_stripe_circuit_transitions_total", { to: "open" }),
        closed: telemetry.metricValue("flexprice_stripe_circuit_transitions_total", { to: "closed" })
      })
      const before = yield* counters
      yield* configure()
      // one window, so each (customer, meter) pair with usage is exactly one aggregate group
      const { expected } = yield* seedUsage({ customers: 6, events: 80, seed: 7, hours: [2] })
      const groups = [...expected.values()].filter((sum) => O.compare(sum, "0") !== 0).length
      // an outage opens the breaker (batches stay pending, nothing failed) ...
      yield* emulator.setFaults({ outageForMs: 60_000 })
      // (each run's push fails once after its retries; two consecutive failures open the breaker)
      for (const during of [yield* sync(), yield* sync()]) expect(during.batchesSynced).toBe(0)
      expect((yield* batches).every((b) => b.syncStatus === "pending")).toBe(true)
      // ... then Stripe is back but rate limits twice: the client retries, the breaker closes
      yield* breakerAdmits
      yield* emulator.setFaults({ failNext: { count: 2, kind: "rate_limit" }, paths: ["/v2/billing"] })
      const reports = yield* syncUntilSettled(40, breakerAdmits)
      expect(reports.length).toBeGreaterThan(0)
      expect(yield* expectTotals(expected)).toEqual([])

      const synced = (yield* batches).filter((b) => b.syncStatus === "synced").length
      expect(synced).toBe(groups)
      const after = yield* counters
      expect(after.retries - before.retries).toBeGreaterThan(0)
      expect(after.synced - before.synced).toBe(synced)
      expect(after.opened - before.opened).toBeGreaterThan(0)
      expect(after.closed - before.closed).toBeGreaterThan(0)

      const exported = yield* telemetry.prometheusText
      expect(exported).toContain("flexprice_sync_batches_total")
      expect(exported).not.toContain(STRIPE_KEY)
      const spans = yield* telemetry.spans
      expect(JSON.stringify(spans.map((s) => [s.name, s.attributes, s.events]))).not.toContain(STRIPE_KEY)
    })
  )
})

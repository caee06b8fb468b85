/**
 * One scheduled run, traced with the in-memory exporter: scheduler tick → run → window →
 * aggregate, and run → push → chunk → Stripe call, in one trace, with tenant attributes and
 * no secret anywhere in the spans.
 */
import { layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { expect } from "vitest"
import { SpanTree, Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { SyncScheduler } from "../../src/sync/SyncScheduler.js"
import { type Backend, forEachBackend } from "../support/app.js"
import { asServed, TestTenant } from "../support/TestApp.js"
import { hoursAgo, STRIPE_KEY } from "./support.js"
import { configure, customer, ingest, meter, stripeTotal, syncLayer } from "./syncLayer.js"

/** The sync service with its scheduler (a pass every second), over the in-memory exporter. */
const scheduled = (backend: Backend) =>
  asServed(SyncScheduler.layer).pipe(
    Layer.provideMerge(syncLayer({ backend, env: { FLEXPRICE_SCHEDULE_ENABLED: "true", FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: "1" } })),
    Layer.provideMerge(Telemetry.layerTest)
  )

/** The Stripe call's ancestors have all been exported: its path starts at the scheduler's pass. */
const complete = (all: ReadonlyArray<ReadableSpan>) => {
  const first = all.find((s) => s.name === "stripe.send_meter_event_stream")
  return first !== undefined && SpanTree.path(first, all)[0] === "SyncScheduler.pass"
}

forEachBackend(["pglite", "postgres"], (backend) =>
  layer(scheduled(backend), { excludeTestServices: true })(`sync tracing (${backend})`, (it) => {
    it.effect("a scheduled run shows tick → window → aggregate → chunk → Stripe call spans", () =>
      Effect.gen(function* () {
        const telemetry = yield* TelemetryTest
        yield* configure()
        const m = yield* meter("tokens", { aggregation: "SUM", field: "t" })
        const c = yield* customer("a")
        yield* ingest([{ event_id: "1", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(2), properties: { t: "3" } }])
        for (let i = 0; i < 100 && (yield* stripeTotal(c.stripeId, m.stripeEventName)) !== "3"; i++) yield* Effect.sleep("100 millis")
        expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe("3")
        // Spans are exported when they end, the run's after its last ledger writes: wait until the
        // call's ancestors are all exported (a fixed delay was too short on a loaded machine).
        let spans = yield* telemetry.spans
        for (let i = 0; i < 100 && !complete(spans); i++) {
          yield* Effect.sleep("100 millis")
          spans = yield* telemetry.spans
        }
        const call = spans.find((s) => s.name === "stripe.send_meter_event_stream")
        expect(call).toBeDefined()
        const pushPath = SpanTree.path(call!, spans)
        expect(pushPath.slice(0, 4)).toEqual(["SyncScheduler.pass", "SyncLease.withLease", "SyncPipeline.run", "Push.push"])
        expect(pushPath).toContain("Push.pushChunk")
        const aggregate = spans.find((s) => s.name === "WindowPass.aggregate" && SpanTree.traceId(s) === SpanTree.traceId(call!))
        expect(aggregate).toBeDefined()
        // (the window's ledger transaction sits between window and aggregate)
        expect(SpanTree.path(aggregate!, spans).filter((n) => /^(Sync|WindowPass)/.test(n))).toEqual([
          "SyncScheduler.pass",
          "SyncLease.withLease",
          "SyncPipeline.run",
          "WindowPass.processWindow",
          "WindowPass.aggregate"
        ])
        expect(spans.some((s) => s.name === "EventStore.aggregatePage" && SpanTree.isDescendantOf(s, aggregate!, spans))).toBe(true)
        const run = spans.find((s) => s.name === "SyncPipeline.run" && SpanTree.traceId(s) === SpanTree.traceId(call!))!
        expect(run.attributes["tenant_id"]).toBe((yield* TestTenant).scope.tenantId)
        expect(run.attributes["sync.batches_synced"]).toBe(1)
        const window = spans.find((s) => s.name === "WindowPass.processWindow" && SpanTree.traceId(s) === SpanTree.traceId(call!))!
        expect(window.attributes["sync.window_start"]).toBe(new Date(Math.floor(Date.parse(hoursAgo(2)) / 3_600_000) * 3_600_000).toISOString())
        const text = JSON.stringify(spans.map((s) => ({ n: s.name, a: s.attributes, e: s.events })))
        expect(text).not.toContain(STRIPE_KEY)
      })
    )
  })
)

import { HttpClient, HttpClientRequest, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Metric, Option } from "effect"
import * as M from "../../src/observability/Metrics.js"
import {
  metricsServer,
  renderPrometheus,
  SpanTree,
  Telemetry,
  TelemetryConfig,
  TelemetryTest,
  traceHeaders,
  traceparent
} from "../../src/observability/Telemetry.js"

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("Telemetry config", () => {
  it.effect("no endpoint → no trace exporter, even if otlp is asked for", () =>
    Effect.gen(function*() {
      const none = yield* withEnv({})(TelemetryConfig)
      expect(none.tracesExporter).toBe("none")
      expect(none.metricsOtlp).toBe(false)
      expect(none.serviceName).toBe("flexprice-stripe-sync")
      const asked = yield* withEnv({ OTEL_TRACES_EXPORTER: "otlp", OTEL_METRICS_EXPORTER: "otlp,prometheus" })(TelemetryConfig)
      expect(asked.tracesExporter).toBe("none")
      expect(asked.metricsOtlp).toBe(false)
    }))

  it.effect("endpoint → otlp traces at /v1/traces; metrics push only when requested", () =>
    Effect.gen(function*() {
      const cfg = yield* withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/", OTEL_SERVICE_NAME: "x" })(TelemetryConfig)
      expect(cfg.tracesExporter).toBe("otlp")
      expect(cfg.tracesEndpoint).toBe("http://collector:4318/v1/traces")
      expect(cfg.metricsOtlp).toBe(false)
      expect(cfg.serviceName).toBe("x")
      const push = yield* withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_METRICS_EXPORTER: "prometheus,otlp" })(TelemetryConfig)
      expect(push.metricsOtlp).toBe(true)
      expect(push.metricsEndpoint).toBe("http://c:4318/v1/metrics")
      const bad = yield* Effect.flip(withEnv({ OTEL_TRACES_EXPORTER: "zipkin" })(TelemetryConfig))
      expect(String(bad)).toContain("OTEL_TRACES_EXPORTER")
    }))

  it.live("Telemetry.layer builds and serves Prometheus text without any endpoint", () =>
    Effect.gen(function*() {
      yield* Metric.increment(Metric.tagged(M.webhooksTotal, "outcome", "processed"))
      const text = yield* renderPrometheus()
      expect(text).toMatch(/^flexprice_webhooks_total\{outcome="processed"\} \d+$/m)
    }).pipe(Effect.provide(Telemetry.layer), withEnv({})))
})

describe("Prometheus names", () => {
  it.live("counters keep their _total name, histograms expand, gauges as is", () =>
    Effect.gen(function*() {
      yield* Metric.increment(Metric.tagged(M.syncBatchesTotal, "status", "synced"))
      yield* Metric.set(M.syncSuccessRatio, 0.75)
      yield* Metric.update(M.syncLagSeconds, 100)
      const t = yield* TelemetryTest
      const text = yield* t.prometheusText
      expect(text).toMatch(/^# TYPE flexprice_sync_batches_total counter$/m)
      expect(text).toMatch(/^flexprice_sync_batches_total\{status="synced"\} [1-9]\d*$/m)
      expect(text).toMatch(/^flexprice_sync_success_ratio 0\.75$/m)
      expect(text).toMatch(/^# TYPE flexprice_sync_lag_seconds histogram$/m)
      expect(text).toMatch(/^flexprice_sync_lag_seconds_bucket\{le="120"\} [1-9]/m)
      expect(text).not.toMatch(/flexprice_sync_batches_total_total/)
      // registered at start-up, before any update
      expect(text).toMatch(/^flexprice_sync_oldest_unsynced_window_age_seconds /m)
      expect(text).toMatch(/^flexprice_events_rejected_total /m)
      const before = yield* t.metricValue("flexprice_sync_batches_total", { status: "synced" })
      yield* Metric.incrementBy(Metric.tagged(M.syncBatchesTotal, "status", "synced"), 2)
      expect(yield* t.metricValue("flexprice_sync_batches_total", { status: "synced" })).toBe(before + 2)
    }).pipe(Effect.provide(Telemetry.layerTest)))

  it.effect("tenant labels only when FLEXPRICE_METRICS_TENANT_LABELS=true", () =>
    Effect.gen(function* () {
      const scope = { tenantId: "tnt_a", environmentId: "env_b" } as never
      const withConfig = (value: string | undefined) =>
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(value === undefined ? [] : [["FLEXPRICE_METRICS_TENANT_LABELS", value]])))
      expect(yield* M.tenantTags(scope).pipe(withConfig(undefined))).toEqual([])
      expect(yield* M.tenantTags(scope).pipe(withConfig("false"))).toEqual([])
      expect((yield* M.tenantTags(scope).pipe(withConfig("true"))).map((l) => [l.key, l.value])).toEqual([
        ["tenant_id", "tnt_a"],
        ["environment_id", "env_b"]
      ])
      expect(yield* M.tenantTagRecord(scope).pipe(withConfig("true"))).toEqual({ tenant_id: "tnt_a", environment_id: "env_b" })
    }))

  it.live("timedSeconds records seconds, not milliseconds", () =>
    Effect.gen(function*() {
      const t = yield* TelemetryTest
      const before = (yield* t.metricPoints("flexprice_aggregation_query_duration_seconds")).find((p) => p.attributes["backend"] === "t1")
      yield* Effect.sleep("30 millis").pipe(M.timedSeconds(Metric.tagged(M.aggregationQueryDurationSeconds, "backend", "t1")))
      const after = (yield* t.metricPoints("flexprice_aggregation_query_duration_seconds")).find((p) => p.attributes["backend"] === "t1")!
      expect(after.value).toBe((before?.value ?? 0) + 1)
      const added = after.sum! - (before?.sum ?? 0)
      expect(added).toBeGreaterThan(0.02)
      expect(added).toBeLessThan(5)
    }).pipe(Effect.provide(Telemetry.layerTest)))

  it.live("FLEXPRICE_METRICS_ADDR server answers /metrics and 404 elsewhere", () =>
    Effect.gen(function*() {
      const port = yield* metricsServer("127.0.0.1:0", renderPrometheus())
      const ok = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/metrics`))
      expect(ok.status).toBe(200)
      expect(ok.headers.get("content-type")).toContain("text/plain")
      expect(yield* Effect.promise(() => ok.text())).toContain("flexprice_sync_batches_total")
      const nf = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/other`))
      expect(nf.status).toBe(404)
    }).pipe(Effect.scoped))
})

describe("traces", () => {
  it.live("nested Effect spans are exported with parent links", () =>
    Effect.gen(function*() {
      const t = yield* TelemetryTest
      yield* t.reset
      const push = Effect.withSpan("stripe.call", { attributes: { endpoint: "/v1/billing/meter_events" } })(Effect.void)
      yield* push.pipe(
        Effect.withSpan("sync.window"),
        Effect.withSpan("sync.run"),
        Effect.withSpan("scheduler.tick")
      )
      const spans = yield* t.spans
      const stripe = spans.find((s) => s.name === "stripe.call")!
      const tick = spans.find((s) => s.name === "scheduler.tick")!
      expect(SpanTree.path(stripe, spans)).toEqual(["scheduler.tick", "sync.run", "sync.window", "stripe.call"])
      expect(SpanTree.isDescendantOf(stripe, tick, spans)).toBe(true)
      expect(SpanTree.traceId(stripe)).toBe(SpanTree.traceId(tick))
      expect(stripe.attributes["endpoint"]).toBe("/v1/billing/meter_events")
    }).pipe(Effect.provide(Telemetry.layerTest)))

  it.live("traceHeaders gives the current span's W3C traceparent (for the stripe SDK)", () =>
    Effect.gen(function*() {
      expect(yield* traceHeaders).toEqual({})
      const inside = yield* Effect.gen(function*() {
        const span = yield* Effect.currentSpan
        return { span, headers: yield* traceHeaders, tp: yield* traceparent }
      }).pipe(Effect.withSpan("stripe.call"))
      expect(inside.headers["traceparent"]).toBe(`00-${inside.span.traceId}-${inside.span.spanId}-01`)
      expect(Option.getOrThrow(inside.tp)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
    }).pipe(Effect.provide(Telemetry.layerTest)))

  it.live("incoming traceparent becomes the parent of the server span; secret headers are not recorded", () => {
    const incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
    const incomingSpan = "00f067aa0ba902b7"
    const app = HttpRouter.empty.pipe(
      HttpRouter.post(
        "/webhooks/stripe",
        Effect.gen(function*() {
          const headers = yield* traceHeaders
          return yield* HttpServerResponse.json(headers)
        }).pipe(Effect.withSpan("webhook.handle"))
      )
    )
    const ServerLive = HttpServer.serve(app).pipe(Layer.provideMerge(NodeHttpServer.layerTest))
    return Effect.gen(function*() {
      const t = yield* TelemetryTest
      yield* t.reset
      // our own client would otherwise replace the traceparent with its client span's
      const client = (yield* HttpClient.HttpClient).pipe(HttpClient.withTracerPropagation(false))
      const res = yield* client.execute(
        HttpClientRequest.post("/webhooks/stripe").pipe(
          HttpClientRequest.setHeaders({
            traceparent: `00-${incomingTrace}-${incomingSpan}-01`,
            "stripe-signature": "t=1,v1=deadbeefsignature",
            "x-api-key": "fp_live_supersecret"
          })
        )
      )
      const body = (yield* res.json) as { traceparent: string }
      expect(body.traceparent.startsWith(`00-${incomingTrace}-`)).toBe(true)
      // the server span may end just after the response is written
      yield* Effect.sleep("50 millis")
      const spans = yield* t.spans
      const server = spans.find((s) => s.kind === 1 && SpanTree.traceId(s) === incomingTrace)
      expect(server).toBeDefined()
      expect(SpanTree.parentId(server!)).toBe(incomingSpan)
      const handler = spans.find((s) => s.name === "webhook.handle")!
      expect(SpanTree.parentId(handler)).toBe(SpanTree.spanId(server!))
      const attrs = JSON.stringify(spans.map((s) => s.attributes))
      expect(attrs).not.toContain("deadbeefsignature")
      expect(attrs).not.toContain("fp_live_supersecret")
    }).pipe(Effect.provide(ServerLive), Effect.provide(Telemetry.layerTest))
  })
})

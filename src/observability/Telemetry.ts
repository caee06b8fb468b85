/**
 * OpenTelemetry wiring: Effect spans → OTel traces, Effect metrics → OTel metrics → Prometheus
 * text (served at `/metrics` by the HTTP layer, or on `FLEXPRICE_METRICS_ADDR`).
 *
 * Configured by the standard variables, with one deliberate deviation: nothing is exported over
 * the network unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `..._TRACES_ENDPOINT` /
 * `..._METRICS_ENDPOINT`) is set. The OTel default of localhost:4318 would make every embedded
 * run try to reach a collector that is not there.
 *
 *   OTEL_SDK_DISABLED=true             no spans exported, no OTLP metrics (Prometheus text still works)
 *   OTEL_SERVICE_NAME                  default `flexprice-stripe-sync`
 *   OTEL_RESOURCE_ATTRIBUTES           k=v,k=v added to the resource
 *   OTEL_TRACES_EXPORTER               otlp | console | none (default otlp when an endpoint is set, else none)
 *   OTEL_METRICS_EXPORTER              comma list of prometheus | otlp | none (default prometheus: pull only)
 *   OTEL_METRIC_EXPORT_INTERVAL        ms between OTLP metric pushes (default 60000)
 *   FLEXPRICE_METRICS_ADDR             host:port for a separate `/metrics` server (optional)
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import type * as OtelResource from "@effect/opentelemetry/Resource"
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { PeriodicExportingMetricReader, type MetricReader } from "@opentelemetry/sdk-metrics"
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type SpanProcessor
} from "@opentelemetry/sdk-trace-base"
import { Context, Effect, Layer } from "effect"
import * as Metrics from "./Metrics.js"
import { makePrometheusReader, metricsServer, PrometheusMetrics, serialize } from "./Prometheus.js"
import { makeTestService, TelemetryTest } from "./TelemetryTest.js"
import { DEFAULT_SERVICE_NAME, TelemetryConfig } from "./TelemetryConfig.js"
import { redactSecretHeaders } from "./TraceContext.js"

export { metricsServer, PROMETHEUS_CONTENT_TYPE, PrometheusMetrics, type PrometheusMetricsService, renderPrometheus } from "./Prometheus.js"
export { type MetricPoint, SpanTree, TelemetryTest, type TelemetryTestService } from "./TelemetryTest.js"
export * from "./TelemetryConfig.js"
export * from "./TraceContext.js"

/** Every product metric registered, read by a Prometheus reader for the layer's lifetime. */
const registeredReader = Effect.suspend(() => {
  Metrics.registerAll()
  return Effect.map(makePrometheusReader, (reader) => ({ reader, render: serialize(reader) }))
})

const spanProcessorsFor = (cfg: TelemetryConfig): Array<SpanProcessor> => {
  if (cfg.disabled) return []
  switch (cfg.tracesExporter) {
    case "otlp":
      return [new BatchSpanProcessor(new OTLPTraceExporter({ url: cfg.tracesEndpoint! }))]
    case "console":
      return [new SimpleSpanProcessor(new ConsoleSpanExporter())]
    case "none":
      return []
  }
}

export const makeLayer = (cfg: TelemetryConfig): Layer.Layer<PrometheusMetrics | OtelResource.Resource> => {
  const resource = {
    serviceName: cfg.serviceName,
    ...(cfg.serviceVersion ? { serviceVersion: cfg.serviceVersion } : {})
  }
  const spanProcessor = spanProcessorsFor(cfg)
  const otlpReaders: Array<MetricReader> = cfg.metricsOtlp && !cfg.disabled
    ? [
      new PeriodicExportingMetricReader({
        exporter: new OTLPMetricExporter({ url: cfg.metricsEndpoint! }),
        exportIntervalMillis: cfg.metricExportIntervalMillis
      })
    ]
    : []
  const sdk = NodeSdk.layer(() => ({
    resource,
    ...(spanProcessor.length > 0 ? { spanProcessor } : {}),
    ...(otlpReaders.length > 0 ? { metricReader: otlpReaders } : {})
  }))
  const prometheus = Layer.scoped(
    PrometheusMetrics,
    Effect.gen(function*() {
      const { render } = yield* registeredReader
      if (cfg.metricsAddr !== undefined) yield* metricsServer(cfg.metricsAddr, render)
      return { render }
    })
  )
  return Layer.mergeAll(prometheus, redactSecretHeaders).pipe(Layer.provideMerge(sdk))
}

export class Telemetry {
  /** Production layer: tracer, metrics readers, Prometheus rendering, secret-header redaction. */
  static readonly layer: Layer.Layer<PrometheusMetrics | OtelResource.Resource, never> = Layer.unwrapEffect(
    Effect.map(Effect.orDie(TelemetryConfig), makeLayer)
  )

  /** Same as `layer`, from an explicit configuration (tests, tools). */
  static readonly layerWith = makeLayer

  /** In-memory spans + Prometheus rendering for tests. See `TelemetryTest`. */
  static readonly layerTest: Layer.Layer<TelemetryTest | PrometheusMetrics | OtelResource.Resource> = Layer.unwrapEffect(
    Effect.sync(() => {
      const exporter = new InMemorySpanExporter()
      const sdk = NodeSdk.layer(() => ({
        resource: { serviceName: `${DEFAULT_SERVICE_NAME}-test` },
        spanProcessor: new SimpleSpanProcessor(exporter)
      }))
      const services = Layer.scopedContext(
        Effect.gen(function*() {
          const { reader, render } = yield* registeredReader
          const test = makeTestService(exporter, reader, render)
          return Context.make(PrometheusMetrics, { render }).pipe(Context.add(TelemetryTest, test))
        })
      )
      return Layer.mergeAll(services, redactSecretHeaders).pipe(Layer.provideMerge(sdk))
    })
  )
}

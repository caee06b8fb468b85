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
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { Headers } from "@effect/platform"
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { PeriodicExportingMetricReader, type MetricReader, type ResourceMetrics } from "@opentelemetry/sdk-metrics"
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
  type SpanProcessor
} from "@opentelemetry/sdk-trace-base"
import { Config, ConfigError, Context, Effect, Either, Layer, Option, Runtime } from "effect"
import * as http from "node:http"
import * as Metrics from "./Metrics.js"

export const DEFAULT_SERVICE_NAME = "flexprice-stripe-sync"
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

/**
 * Request/response headers that must never be copied into span attributes. @effect/platform's
 * server tracer records every header except `authorization`, `cookie`, `set-cookie`, `x-api-key`.
 */
export const SECRET_HEADER_NAMES: ReadonlyArray<string | RegExp> = [
  "stripe-signature",
  "x-flexprice-api-key",
  "proxy-authorization",
  "x-sentry-auth",
  /secret/i,
  /token/i,
  /api[-_]?key/i
]

// ---------------------------------------------------------------------------------------------
// Configuration

export type TracesExporter = "otlp" | "console" | "none"

export interface TelemetryConfig {
  readonly disabled: boolean
  readonly serviceName: string
  readonly serviceVersion: string | undefined
  readonly tracesExporter: TracesExporter
  readonly tracesEndpoint: string | undefined
  readonly metricsOtlp: boolean
  readonly metricsEndpoint: string | undefined
  readonly metricExportIntervalMillis: number
  readonly metricsAddr: string | undefined
}

const optionalString = (name: string) =>
  Config.string(name).pipe(
    Config.option,
    Config.map((o) => Option.getOrUndefined(Option.filter(o, (s) => s.trim() !== ""))?.trim())
  )

const join = (base: string, path: string) => `${base.replace(/\/+$/, "")}${path}`

export const TelemetryConfig: Config.Config<TelemetryConfig> = Config.all({
  disabled: Config.boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false)),
  serviceName: Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault(DEFAULT_SERVICE_NAME)),
  serviceVersion: optionalString("OTEL_SERVICE_VERSION"),
  endpoint: optionalString("OTEL_EXPORTER_OTLP_ENDPOINT"),
  tracesEndpoint: optionalString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
  metricsEndpoint: optionalString("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
  tracesExporter: optionalString("OTEL_TRACES_EXPORTER"),
  metricsExporter: optionalString("OTEL_METRICS_EXPORTER"),
  interval: Config.integer("OTEL_METRIC_EXPORT_INTERVAL").pipe(Config.withDefault(60_000)),
  metricsAddr: optionalString("FLEXPRICE_METRICS_ADDR")
}).pipe(
  Config.mapOrFail((c) => {
    const tracesEndpoint = c.tracesEndpoint ?? (c.endpoint ? join(c.endpoint, "/v1/traces") : undefined)
    const metricsEndpoint = c.metricsEndpoint ?? (c.endpoint ? join(c.endpoint, "/v1/metrics") : undefined)
    const requested = (c.tracesExporter ?? (tracesEndpoint ? "otlp" : "none")).split(",")[0]!.trim().toLowerCase()
    if (requested !== "otlp" && requested !== "console" && requested !== "none") {
      return Either.left(
        ConfigError.InvalidData(["OTEL_TRACES_EXPORTER"], `expected otlp, console or none, got "${requested}"`)
      )
    }
    const metricsExporters = (c.metricsExporter ?? "prometheus").split(",").map((s) => s.trim().toLowerCase())
    return Either.right<TelemetryConfig>({
      disabled: c.disabled,
      serviceName: c.serviceName,
      serviceVersion: c.serviceVersion,
      // `otlp` without an endpoint means "not configured": stay off the network.
      tracesExporter: requested === "otlp" && tracesEndpoint === undefined ? "none" : requested,
      tracesEndpoint,
      metricsOtlp: metricsExporters.includes("otlp") && metricsEndpoint !== undefined,
      metricsEndpoint,
      metricExportIntervalMillis: c.interval,
      metricsAddr: c.metricsAddr
    })
  })
)

// ---------------------------------------------------------------------------------------------
// Prometheus text

export interface PrometheusMetricsService {
  /** Current metrics in Prometheus text exposition format 0.0.4. */
  readonly render: Effect.Effect<string>
}

export class PrometheusMetrics extends Context.Tag("flexprice/PrometheusMetrics")<PrometheusMetrics, PrometheusMetricsService>() {}

const serializer = new PrometheusSerializer("", false, undefined, false, true)

const serialize = (reader: MetricReader): Effect.Effect<string> =>
  Effect.promise(() => reader.collect()).pipe(
    Effect.map(({ resourceMetrics }: { resourceMetrics: ResourceMetrics }) => serializer.serialize(resourceMetrics))
  )

/** A Prometheus reader fed from Effect's metric registry, for the layer's lifetime. */
const makePrometheusReader = Effect.gen(function*() {
  const reader = new PrometheusExporter({ preventServerStart: true })
  yield* OtelMetrics.registerProducer(yield* OtelMetrics.makeProducer, () => reader)
  return reader
})

/**
 * Prometheus text for `/metrics`. Uses the `PrometheusMetrics` service when one is provided
 * (Telemetry.layer / layerTest); otherwise renders from Effect's global metric registry directly,
 * so the HTTP route works even without the telemetry layer.
 */
export const renderPrometheus = (): Effect.Effect<string> =>
  Effect.serviceOption(PrometheusMetrics).pipe(
    Effect.flatMap(
      Option.match({
        onSome: (m) => m.render,
        onNone: () =>
          Effect.scoped(
            makePrometheusReader.pipe(
              Effect.flatMap(serialize),
              Effect.provide(OtelResource.layer({ serviceName: DEFAULT_SERVICE_NAME }))
            )
          )
      })
    )
  )

const parseAddr = (addr: string): { host: string | undefined; port: number } => {
  const i = addr.lastIndexOf(":")
  const host = i > 0 ? addr.slice(0, i).replace(/^\[|\]$/g, "") : undefined
  const port = Number(i >= 0 ? addr.slice(i + 1) : addr)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`FLEXPRICE_METRICS_ADDR: expected host:port, got "${addr}"`)
  return { host, port }
}

/** A tiny `/metrics` server on its own address (when the main HTTP port must not expose metrics). */
export const metricsServer = (addr: string, render: Effect.Effect<string>) =>
  Effect.gen(function*() {
    const { host, port } = yield* Effect.try({ try: () => parseAddr(addr), catch: (e) => e as Error }).pipe(Effect.orDie)
    const runtime = yield* Effect.runtime<never>()
    const server = http.createServer((req, res) => {
      if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
        res.statusCode = 404
        res.end("not found\n")
        return
      }
      Runtime.runPromise(runtime)(render).then(
        (body) => {
          res.setHeader("content-type", PROMETHEUS_CONTENT_TYPE)
          res.end(body)
        },
        () => {
          res.statusCode = 500
          res.end("# metrics collection failed\n")
        }
      )
    })
    yield* Effect.acquireRelease(
      Effect.async<void, Error>((resume) => {
        server.once("error", (e) => resume(Effect.fail(e)))
        server.listen(port, host, () => resume(Effect.void))
      }).pipe(Effect.orDie),
      () =>
        Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    const a = server.address()
    const boundPort = typeof a === "object" && a !== null ? a.port : port
    yield* Effect.logInfo(`metrics served on http://${host ?? "0.0.0.0"}:${boundPort}/metrics`)
    return boundPort
  })

// ---------------------------------------------------------------------------------------------
// Trace context for clients that are not Effect's HttpClient (the stripe SDK)

/**
 * W3C `traceparent` for the current span, if any. Effect's HttpClient injects this itself;
 * the stripe SDK does not, so the Stripe client passes `{ headers: yield* traceHeaders }` as
 * request options.
 */
export const traceparent: Effect.Effect<Option.Option<string>> = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.map((span) => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`)
)

/** `{ traceparent }` for the current span, or `{}` outside any span. */
export const traceHeaders: Effect.Effect<Record<string, string>> = Effect.map(
  traceparent,
  Option.match({ onNone: () => ({}), onSome: (tp) => ({ traceparent: tp }) })
)

/**
 * Keeps secret-bearing headers (Stripe-Signature, API keys) out of the HTTP server/client span
 * attributes. Included in `Telemetry.layer` and `layerTest`; provide it to the HTTP server layer
 * (as a dependency, so its fibers inherit the setting) if you build the server without them.
 */
export const redactSecretHeaders: Layer.Layer<never> = Layer.scopedDiscard(
  Effect.locallyScopedWith(Headers.currentRedactedNames, (names) => [...names, ...SECRET_HEADER_NAMES])
)

// ---------------------------------------------------------------------------------------------
// Layers

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
      Metrics.registerAll()
      const reader = yield* makePrometheusReader
      const render = serialize(reader)
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
          Metrics.registerAll()
          const reader = yield* makePrometheusReader
          const render = serialize(reader)
          const test = makeTestService(exporter, reader, render)
          return Context.make(PrometheusMetrics, { render }).pipe(Context.add(TelemetryTest, test))
        })
      )
      return Layer.mergeAll(services, redactSecretHeaders).pipe(Layer.provideMerge(sdk))
    })
  )
}

// ---------------------------------------------------------------------------------------------
// Test helpers

export interface MetricPoint {
  readonly name: string
  readonly attributes: Readonly<Record<string, string | number | boolean>>
  /** Counter/gauge value, or histogram count. */
  readonly value: number
  /** Histogram sum (undefined for counters and gauges). */
  readonly sum?: number
}

export interface TelemetryTestService {
  /** Finished spans, oldest first. */
  readonly spans: Effect.Effect<ReadonlyArray<ReadableSpan>>
  readonly spansNamed: (name: string) => Effect.Effect<ReadonlyArray<ReadableSpan>>
  /** Drops recorded spans. Effect metrics are process-global: compare before/after values instead. */
  readonly reset: Effect.Effect<void>
  /** Data points of one metric (Effect name, e.g. `flexprice_sync_batches_total`). */
  readonly metricPoints: (name: string) => Effect.Effect<ReadonlyArray<MetricPoint>>
  /** Sum of matching points' values (all points whose attributes include `tags`). */
  readonly metricValue: (name: string, tags?: Record<string, string>) => Effect.Effect<number>
  readonly prometheusText: Effect.Effect<string>
}

export class TelemetryTest extends Context.Tag("flexprice/TelemetryTest")<TelemetryTest, TelemetryTestService>() {}

const makeTestService = (
  exporter: InMemorySpanExporter,
  reader: MetricReader,
  render: Effect.Effect<string>
): TelemetryTestService => {
  const spans = Effect.sync(() => exporter.getFinishedSpans() as ReadonlyArray<ReadableSpan>)
  const metricPoints = (name: string) =>
    Effect.promise(() => reader.collect()).pipe(
      Effect.map(({ resourceMetrics }) =>
        resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).filter((m) => m.descriptor.name === name).flatMap((m) =>
          (m.dataPoints as ReadonlyArray<{ attributes: MetricPoint["attributes"]; value: unknown }>).map((p): MetricPoint => {
            const v = p.value
            if (typeof v === "number") return { name, attributes: p.attributes, value: v }
            const h = v as { count: number; sum?: number }
            return { name, attributes: p.attributes, value: h.count, sum: h.sum ?? 0 }
          })
        )
      )
    )
  return {
    spans,
    spansNamed: (name) => Effect.map(spans, (all) => all.filter((s) => s.name === name)),
    reset: Effect.sync(() => exporter.reset()),
    metricPoints,
    metricValue: (name, tags = {}) =>
      Effect.map(metricPoints(name), (points) =>
        points
          .filter((p) => Object.entries(tags).every(([k, v]) => String(p.attributes[k]) === v))
          .reduce((acc, p) => acc + p.value, 0)),
    prometheusText: render
  }
}

/** Span helpers for assertions on trace shape. */
export const SpanTree = {
  traceId: (s: ReadableSpan) => s.spanContext().traceId,
  spanId: (s: ReadableSpan) => s.spanContext().spanId,
  parentId: (s: ReadableSpan) => s.parentSpanContext?.spanId,
  /** True when `ancestor` is `span` or on its parent chain within `all`. */
  isDescendantOf: (span: ReadableSpan, ancestor: ReadableSpan, all: ReadonlyArray<ReadableSpan>): boolean => {
    const byId = new Map(all.map((s) => [s.spanContext().spanId, s]))
    let cur: ReadableSpan | undefined = span
    const target = ancestor.spanContext().spanId
    for (let depth = 0; cur !== undefined && depth < 1000; depth++) {
      if (cur.spanContext().spanId === target) return true
      const parent: string | undefined = cur.parentSpanContext?.spanId
      cur = parent === undefined ? undefined : byId.get(parent)
    }
    return false
  },
  /** Names from the root to `span`. */
  path: (span: ReadableSpan, all: ReadonlyArray<ReadableSpan>): ReadonlyArray<string> => {
    const byId = new Map(all.map((s) => [s.spanContext().spanId, s]))
    const out: Array<string> = []
    let cur: ReadableSpan | undefined = span
    for (let depth = 0; cur !== undefined && depth < 1000; depth++) {
      out.unshift(cur.name)
      const parent: string | undefined = cur.parentSpanContext?.spanId
      cur = parent === undefined ? undefined : byId.get(parent)
    }
    return out
  }
}


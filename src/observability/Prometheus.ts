/**
 * Prometheus text exposition: a reader fed from Effect's metric registry, rendered for `/metrics`
 * on the HTTP layer or on a separate address (`FLEXPRICE_METRICS_ADDR`).
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { MetricReader, ResourceMetrics } from "@opentelemetry/sdk-metrics"
import { Context, Effect, Option, Runtime } from "effect"
import * as http from "node:http"
import { DEFAULT_SERVICE_NAME } from "./TelemetryConfig.js"

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export interface PrometheusMetricsService {
  /** Current metrics in Prometheus text exposition format 0.0.4. */
  readonly render: Effect.Effect<string>
}

export class PrometheusMetrics extends Context.Tag("flexprice/PrometheusMetrics")<PrometheusMetrics, PrometheusMetricsService>() {}

const serializer = new PrometheusSerializer("", false, undefined, false, true)

export const serialize = (reader: MetricReader): Effect.Effect<string> =>
  Effect.promise(() => reader.collect()).pipe(
    Effect.map(({ resourceMetrics }: { resourceMetrics: ResourceMetrics }) => serializer.serialize(resourceMetrics))
  )

/** A Prometheus reader fed from Effect's metric registry, for the layer's lifetime. */
export const makePrometheusReader = Effect.gen(function*() {
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

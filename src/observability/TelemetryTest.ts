/**
 * Test-side view of telemetry: recorded spans, metric points and Prometheus text, provided by
 * `Telemetry.layerTest`; `SpanTree` for assertions on trace shape.
 */
import type { MetricReader } from "@opentelemetry/sdk-metrics"
import type { InMemorySpanExporter, ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { Context, Effect } from "effect"

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

export const makeTestService = (
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

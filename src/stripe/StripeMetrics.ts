/**
 * Stripe client metrics (Effect `Metric`, exported to OpenTelemetry/Prometheus by the
 * observability layer). Tags are low-cardinality: endpoint is a route template, never an id;
 * the per-tenant gauge uses the tenant key (tenant/environment id), never a Stripe key.
 */
import { Metric, MetricBoundaries, MetricLabel } from "effect"

const latencyBoundaries = MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 14 }) // 5 ms … ~41 s

/** Logical calls (after retries). Tags: endpoint, status_class (2xx|4xx|5xx|network|none), outcome. */
export const callsTotal = Metric.counter("flexprice_stripe_calls_total", {
  description: "Stripe client calls by endpoint, final HTTP status class and outcome",
  incremental: true
})

/** Individual HTTP attempts. Tags: endpoint, status_class. */
export const requestsTotal = Metric.counter("flexprice_stripe_requests_total", {
  description: "HTTP requests sent to Stripe (each retry is one more)",
  incremental: true
})

/** Wall time of a logical call including retries and back-pressure. Tags: endpoint, outcome. */
export const callDuration = Metric.histogram(
  "flexprice_stripe_call_duration_seconds",
  latencyBoundaries,
  "Stripe call latency in seconds, including retries and waits"
)

/** Retries scheduled. Tags: endpoint, reason (rate_limited|unavailable|session_expired). */
export const retriesTotal = Metric.counter("flexprice_stripe_retries_total", {
  description: "Stripe retries scheduled by the client's retry policies",
  incremental: true
})

/** Per-tenant breaker state: 0 closed, 1 half-open, 2 open. Tag: tenant. */
export const circuitState = Metric.gauge("flexprice_stripe_circuit_state", {
  description: "Circuit breaker state per tenant (0 closed, 1 half-open, 2 open)"
})

/** Breaker transitions. Tags: to (closed|open|half_open). */
export const circuitTransitionsTotal = Metric.counter("flexprice_stripe_circuit_transitions_total", {
  description: "Circuit breaker state transitions",
  incremental: true
})

/** Time spent waiting for a rate-limiter token. Tags: limiter (api_live|api_test|meter_events). */
export const rateLimiterWait = Metric.histogram(
  "flexprice_stripe_rate_limiter_wait_seconds",
  MetricBoundaries.exponential({ start: 0.001, factor: 2, count: 16 }),
  "Time a Stripe request waited for the per-tenant rate limiter"
)

/** Meter events handed to Stripe. Tags: transport (stream|v1), outcome (delivered|duplicate). */
export const meterEventsTotal = Metric.counter("flexprice_stripe_meter_events_total", {
  description: "Meter events accepted by Stripe, by transport and outcome",
  incremental: true
})

/** v2 meter event sessions created. Tag: reason (initial|expiring|expired). */
export const sessionRefreshesTotal = Metric.counter("flexprice_stripe_meter_event_sessions_total", {
  description: "Meter event sessions created, by reason",
  incremental: true
})

export const statusClass = (status: number | undefined): string =>
  status === undefined ? "network" : status >= 500 ? "5xx" : status >= 400 ? "4xx" : status >= 200 ? "2xx" : "other"

// Tagged metric instances are cached: building one per call (labels, key, hash) showed in profiles.
const taggedCache = new WeakMap<object, Map<string, unknown>>()

/** `metric` with these labels, built once per distinct label set. */
export const tagged = <T, I, O>(metric: Metric.Metric<T, I, O>, tags: Record<string, string>): Metric.Metric<T, I, O> => {
  let byTags = taggedCache.get(metric)
  if (!byTags) {
    byTags = new Map()
    taggedCache.set(metric, byTags)
  }
  const key = Object.entries(tags)
    .map(([k, v]) => `${k}\u0000${v}`)
    .join("\u0001")
  const found = byTags.get(key) as Metric.Metric<T, I, O> | undefined
  if (found) return found
  const made = Metric.taggedWithLabels(
    metric,
    Object.entries(tags).map(([k, v]) => MetricLabel.make(k, v))
  )
  byTags.set(key, made)
  return made
}

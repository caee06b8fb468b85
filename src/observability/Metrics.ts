/**
 * Every non-Stripe metric of the service, defined once so names stay stable for the alert rules
 * and the Grafana dashboard (deploy/). The Stripe client defines its own `flexprice_stripe_*`
 * metrics in src/stripe/StripeMetrics.ts.
 *
 * Effect metrics live in a process-global registry; @effect/opentelemetry exports them through
 * OpenTelemetry (Telemetry.ts), where the Prometheus exporter renders them:
 *   - counters (all `incremental`, hence monotonic) keep their name; names already end in `_total`;
 *   - histograms become `<name>_bucket` / `<name>_sum` / `<name>_count`;
 *   - gauges keep their name.
 * No metric carries a `unit` tag: @effect/opentelemetry would turn it into an OTel unit and the
 * Prometheus exporter could then append a unit suffix, changing the names the alerts use.
 *
 * Usage:
 *   Metric.increment(Metric.tagged(Metrics.syncBatchesTotal, "status", "synced"))
 *     (use the data-first form: `metric.pipe(Metric.tagged(k, v))` infers the input type as never)
 *   effect.pipe(Metrics.timedSeconds(Metrics.syncBatchDurationSeconds))
 *   Metric.set(Metrics.syncPendingBatches, 3)
 *   Metric.taggedWithLabels(Metrics.eventsAcceptedTotal, tenantTags(scope))
 */
import { Config, Duration, Effect, Metric, MetricBoundaries, MetricLabel } from "effect"
import type { TenantScope } from "../domain/Ids.js"

// ---------------------------------------------------------------------------------------------
// Buckets

/** Request/processing durations in seconds: 5 ms … ~41 s. */
export const durationBoundaries = MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 14 })

/** Sync lag in seconds (window end → synced): the SLO is 65 minutes, so buckets cluster there. */
export const lagBoundaries = MetricBoundaries.fromIterable([
  30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 3900, 5400, 7200, 14400, 28800, 86400
])

// ---------------------------------------------------------------------------------------------
// Tenant labels (bounded cardinality only when the operator opts in)

/**
 * `FLEXPRICE_METRICS_TENANT_LABELS`, read through Config at each use so a test's
 * ConfigProvider (or the operator's environment) decides; anything unreadable means off.
 */
export const tenantLabelsEnabled: Effect.Effect<boolean> = Config.boolean("FLEXPRICE_METRICS_TENANT_LABELS").pipe(
  Config.withDefault(false),
  Effect.orElseSucceed(() => false)
)

/**
 * `tenant_id` / `environment_id` labels when `FLEXPRICE_METRICS_TENANT_LABELS=true`, else none.
 * Use with `Metric.taggedWithLabels(metric, yield* tenantTags(scope))`.
 */
export const tenantTags = (
  scope: Pick<TenantScope, "tenantId" | "environmentId"> | undefined
): Effect.Effect<ReadonlyArray<MetricLabel.MetricLabel>> =>
  Effect.map(tenantLabelsEnabled, (on) =>
    scope !== undefined && on
      ? [MetricLabel.make("tenant_id", scope.tenantId), MetricLabel.make("environment_id", scope.environmentId)]
      : []
  )

/** The same labels as a plain record (for span attributes or ad-hoc tagging). */
export const tenantTagRecord = (
  scope: Pick<TenantScope, "tenantId" | "environmentId"> | undefined
): Effect.Effect<Record<string, string>> =>
  Effect.map(tenantTags(scope), (tags) => Object.fromEntries(tags.map((l) => [l.key, l.value])))

// ---------------------------------------------------------------------------------------------
// Sync

/** Batches by final status. Tag `status`: `synced` | `failed` | `skipped` | `retrying`. */
export const syncBatchesTotal = Metric.counter("flexprice_sync_batches_total", {
  description: "Sync batches by status",
  incremental: true
})

/** Fraction (0..1) of batches synced in the last run. Set once per run. */
export const syncSuccessRatio = Metric.gauge("flexprice_sync_success_ratio", {
  description: "Share of batches synced successfully in the latest sync run (0..1)"
})

/** Wall time to process one batch (aggregate → push → record). */
export const syncBatchDurationSeconds = Metric.histogram(
  "flexprice_sync_batch_duration_seconds",
  durationBoundaries,
  "Time to process one sync batch, seconds"
)

/** Window end → batch confirmed by Stripe. */
export const syncLagSeconds = Metric.histogram(
  "flexprice_sync_lag_seconds",
  lagBoundaries,
  "Event processing lag from aggregation window end to synced, seconds"
)

/**
 * Ingestion → batch confirmed by Stripe, the worst case over the batch's rows: a batch holds rows
 * ingested in (ingested_after, watermark] of a window, and a row is not ingested before its own
 * timestamp (≥ window start), so no row of it waited longer than now − max(window start,
 * ingested_after). Late rows (delta batches) therefore count from the previous pass's watermark.
 */
export const syncIngestLagSeconds = Metric.histogram(
  "flexprice_sync_ingest_lag_seconds",
  lagBoundaries,
  "Event processing lag from ingestion to synced (longest possible in each batch), seconds"
)

export const syncPendingBatches = Metric.gauge("flexprice_sync_pending_batches", {
  description: "Sync batches waiting to be pushed"
})

export const syncFailedBatches = Metric.gauge("flexprice_sync_failed_batches", {
  description: "Sync batches in failed state (needing retry or operator action)"
})

export const syncOldestUnsyncedWindowAgeSeconds = Metric.gauge(
  "flexprice_sync_oldest_unsynced_window_age_seconds",
  { description: "Age of the oldest closed aggregation window not yet synced, seconds (0 when none)" }
)

/**
 * Sync runs by outcome. Tag `status`: `completed` | `partial` (stopped by a transient Stripe
 * failure or an undecryptable key; batches stay pending) | `failed` | `lease_busy` (another
 * runner held the tenant) | `rejected` (manual range not closed) | `dry_run`.
 */
export const syncRunsTotal = Metric.counter("flexprice_sync_runs_total", {
  description: "Sync runs by outcome",
  incremental: true
})

/**
 * Unix seconds at which the latest `completed` sync run finished, read from the run log
 * (`stripe_sync_runs`) by the scheduler, so every replica reports the same fleet-wide value.
 * Per tenant with `FLEXPRICE_METRICS_TENANT_LABELS=true`; otherwise one series holding the
 * stalest sync-enabled tenant's value (the minimum over tenants). A tenant with no completed run
 * yet counts from the time its config was created.
 */
export const syncLastSuccessTimestampSeconds = Metric.gauge("flexprice_sync_last_success_timestamp_seconds", {
  description: "Unix time of the latest completed sync run (per tenant, or the stalest tenant)"
})

/** Unix seconds of the scheduler loop's latest pass in this process; 0 while no scheduler runs here. */
export const syncSchedulerHeartbeatTimestampSeconds = Metric.gauge(
  "flexprice_sync_scheduler_heartbeat_timestamp_seconds",
  { description: "Unix time of the sync scheduler's latest pass in this process (0: no scheduler here)" }
)

/**
 * Due instant (window end + grace) → the scheduled run that serves it starts, seconds. The
 * scheduler sleeps until due instants, so this is ~0 unless the tenant's previous run was still
 * going or the concurrency bound (FLEXPRICE_SYNC_TENANT_CONCURRENCY) made it wait.
 */
export const syncScheduleDelaySeconds = Metric.histogram(
  "flexprice_sync_schedule_delay_seconds",
  MetricBoundaries.fromIterable([0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800]),
  "Delay from a window's due instant to the start of the run serving it, seconds"
)

/**
 * Stripe requests spent from the call budget (src/sync/CallBudget.ts): every request a sync
 * run sends (meter events, stream sessions, resend-guard summary reads) and reconciliation's reads. Tenant labels opt-in.
 */
export const syncStripeRequestsTotal = Metric.counter("flexprice_sync_stripe_requests_total", {
  description: "Stripe requests made by sync runs (meter events) and reconciliation (summaries)",
  incremental: true
})

/**
 * The same requests in the trailing hour, counted by this process (the
 * requirements' budget: fewer than 100 Stripe calls an hour per tenant). Per tenant with tenant
 * labels; otherwise the busiest tenant's count.
 */
export const syncStripeRequestsLastHour = Metric.gauge("flexprice_sync_stripe_requests_last_hour", {
  description: "Stripe requests by sync runs and reconciliation in the trailing hour (per tenant, or the busiest tenant)"
})

// ---------------------------------------------------------------------------------------------
// Webhooks

/**
 * Webhook deliveries. Tags `type` (Stripe event type) and `outcome`:
 * `processed` | `duplicate` | `ignored` | `unmapped` | `conflict` | `invalid` | `failed`.
 */
export const webhooksTotal = Metric.counter("flexprice_webhooks_total", {
  description: "Stripe webhook deliveries by type and outcome",
  incremental: true
})

export const webhookDurationSeconds = Metric.histogram(
  "flexprice_webhook_duration_seconds",
  durationBoundaries,
  "Webhook handling time, seconds"
)

/** Tag `reason`: `signature` | `timestamp` | `body_too_large` | `malformed` | `ip_not_allowed`. */
export const webhookSignatureFailuresTotal = Metric.counter("flexprice_webhook_signature_failures_total", {
  description: "Webhook deliveries rejected before processing (bad signature, stale timestamp, ...)",
  incremental: true
})

/**
 * Errors Stripe reported for meter events it had accepted on the v2 stream and then dropped
 * (`v1.billing.meter.error_report_triggered` / `no_meter_found`), by Stripe's code (`code`:
 * Stripe's documented codes, anything else `other`). Incremented by each report's error count.
 */
export const stripeMeterErrorReportsTotal = Metric.counter("flexprice_stripe_meter_error_reports_total", {
  description: "Meter events Stripe reported dropped after accepting them, by Stripe error code",
  incremental: true
})

/**
 * Batches put back to pending after Stripe lost or dropped them. Tag `reason`: `mapping_fixed`
 * (an error report's cause was repaired) | `reconciliation` (Stripe's summary proved them
 * missing) | `needs_review` (missing again after a re-queue: left failed for an operator).
 */
export const syncBatchesRequeuedTotal = Metric.counter("flexprice_sync_batches_requeued_total", {
  description: "Batches re-queued after Stripe dropped or lost them",
  incremental: true
})

/** Scheduled reconciliation passes by `outcome`: `completed` | `failed`. */
export const reconciliationRunsTotal = Metric.counter("flexprice_reconciliation_runs_total", {
  description: "Scheduled reconciliation passes per tenant environment",
  incremental: true
})

// ---------------------------------------------------------------------------------------------
// Ingestion

export const eventsAcceptedTotal = Metric.counter("flexprice_events_accepted_total", {
  description: "Usage events accepted",
  incremental: true
})

/** Tag `reason` (validation code), bounded. */
export const eventsRejectedTotal = Metric.counter("flexprice_events_rejected_total", {
  description: "Usage events rejected by validation",
  incremental: true
})

/** Tag `code`: the typed error code. */
export const eventProcessingErrorsTotal = Metric.counter("flexprice_event_processing_errors_total", {
  description: "Errors while processing usage events, by error code",
  incremental: true
})

export const pendingCustomerEvents = Metric.gauge("flexprice_pending_customer_events", {
  description: "Events waiting for their customer to be onboarded"
})

/** A batch of customer links (a migration page) lost a race to a concurrent writer and was linked one by one. */
export const customerLinkBatchFallbacksTotal = Metric.counter("flexprice_customer_link_batch_fallbacks_total", {
  description: "Customer link batches linked one by one after losing a race to a concurrent writer",
  incremental: true
})

/**
 * A ClickHouse window read whose audit found two rows of one (event, meter): something wrote
 * around the ingest deduplication, and the read took the exact (slower) path. Should stay 0.
 */
export const eventStoreDuplicateReadsTotal = Metric.counter("flexprice_event_store_duplicate_reads_total", {
  description: "ClickHouse window reads that found duplicate processed rows and used the exact deduplicating path",
  incremental: true
})

/** Tag `backend`: `postgres` | `pglite` | `clickhouse`. */
export const aggregationQueryDurationSeconds = Metric.histogram(
  "flexprice_aggregation_query_duration_seconds",
  durationBoundaries,
  "Aggregation query time by event-store backend, seconds"
)

/** Aggregate groups returned per aggregation query (one window pass), by backend. */
export const aggregationResultGroups = Metric.histogram(
  "flexprice_aggregation_result_groups",
  MetricBoundaries.exponential({ start: 1, factor: 4, count: 10 }),
  "Aggregate groups (customer, meter, event type) returned by one window's aggregation"
)

// ---------------------------------------------------------------------------------------------
// HTTP

/** Tags `method`, `route` (the route template, never the raw path), `status` (class `2xx`…). */
export const httpRequestsTotal = Metric.counter("flexprice_http_requests_total", {
  description: "HTTP requests served",
  incremental: true
})

export const httpRequestDurationSeconds = Metric.histogram(
  "flexprice_http_request_duration_seconds",
  durationBoundaries,
  "HTTP request handling time, seconds"
)

// ---------------------------------------------------------------------------------------------
// Errors by type (typed errors report their code)

/** Tags `code` and `area` (`sync` | `webhook` | `ingest` | `http` | `migration` | `config`). */
export const errorsTotal = Metric.counter("flexprice_errors_total", {
  description: "Typed errors by code and area",
  incremental: true
})

// ---------------------------------------------------------------------------------------------
// Helpers

/** Records the effect's wall time in seconds into a `_seconds` histogram. */
export const timedSeconds = (
  histogram: Metric.Metric.Histogram<number>
): (<A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
  Metric.trackDurationWith(histogram, (d) => Duration.toMillis(d) / 1000)

/** HTTP status class label (`2xx`, `4xx`, ...). */
export const statusClass = (status: number): string => `${Math.floor(status / 100)}xx`

/** Every metric above, so the exporter can list them (at zero) from start-up. */
export const all: ReadonlyArray<{ register(): unknown }> = [
  syncBatchesTotal,
  syncSuccessRatio,
  syncBatchDurationSeconds,
  syncLagSeconds,
  syncIngestLagSeconds,
  syncPendingBatches,
  syncFailedBatches,
  syncOldestUnsyncedWindowAgeSeconds,
  syncRunsTotal,
  syncLastSuccessTimestampSeconds,
  syncSchedulerHeartbeatTimestampSeconds,
  syncScheduleDelaySeconds,
  syncStripeRequestsTotal,
  syncStripeRequestsLastHour,
  webhooksTotal,
  webhookDurationSeconds,
  webhookSignatureFailuresTotal,
  stripeMeterErrorReportsTotal,
  syncBatchesRequeuedTotal,
  reconciliationRunsTotal,
  eventsAcceptedTotal,
  eventsRejectedTotal,
  eventProcessingErrorsTotal,
  pendingCustomerEvents,
  customerLinkBatchFallbacksTotal,
  eventStoreDuplicateReadsTotal,
  aggregationQueryDurationSeconds,
  aggregationResultGroups,
  httpRequestsTotal,
  httpRequestDurationSeconds,
  errorsTotal
]

/**
 * Registers metrics (untagged) in Effect's global registry so they show up in `/metrics` before
 * their first update. Accepts any module namespace (e.g. `import * as StripeMetrics`); values that
 * are not Effect metrics are skipped.
 */
export const registerAll = (source: Iterable<unknown> | Record<string, unknown> = all): void => {
  const values = Symbol.iterator in Object(source) ? [...(source as Iterable<unknown>)] : Object.values(source)
  for (const v of values) if (isMetric(v)) v.register()
}

const isMetric = (u: unknown): u is { register(): unknown } =>
  typeof u === "function" && "keyType" in u && "unsafeValue" in u && "register" in u

/**
 * The sync's metric updates in one place, so the stage modules say what happened
 * (`countBatches("synced", n)`) and the metric names and labels the alert rules depend on
 * (observability/Metrics.ts) are written once.
 */
import { Clock, Effect, Metric, MetricLabel, Option } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import * as Metrics from "../observability/Metrics.js"
import type { BatchRow, SyncBatchRepo } from "../repositories/SyncBatchRepo.js"

export const label = (k: string, v: string) => MetricLabel.make(k, v)

/** `flexprice_sync_batches_total{status}` (nothing recorded for 0). */
export const countBatches = (status: string, n: number) =>
  n === 0 ? Effect.void : Metric.incrementBy(Metric.taggedWithLabels(Metrics.syncBatchesTotal, [label("status", status)]), n)

export const aggregationDuration = (backend: string, elapsedMs: number) =>
  Metric.update(Metric.taggedWithLabels(Metrics.aggregationQueryDurationSeconds, [label("backend", backend)]), elapsedMs / 1000)

export const chunkDuration = (elapsedMs: number) => Metric.update(Metrics.syncBatchDurationSeconds, elapsedMs / 1000)

/** Lag from each batch's window end, and from its rows' ingestion (worst case), to its confirmation by Stripe. */
export const syncLag = (batches: ReadonlyArray<BatchRow>, now: number) =>
  Effect.forEach(
    batches,
    (b) => {
      const ingestedFrom = Math.max(b.windowStart.getTime(), b.ingestedAfter?.getTime() ?? 0)
      return Effect.zipRight(
        Metric.update(Metrics.syncLagSeconds, Math.max(0, (now - b.windowEnd.getTime()) / 1000)),
        Metric.update(Metrics.syncIngestLagSeconds, Math.max(0, (now - ingestedFrom) / 1000))
      )
    },
    { discard: true }
  )

export const syncErrors = (code: string) =>
  Metric.increment(Metric.taggedWithLabels(Metrics.errorsTotal, [label("code", code), label("area", "sync")]))

export const successRatio = (synced: number, attempted: number) =>
  attempted > 0 ? Metric.set(Metrics.syncSuccessRatio, synced / attempted) : Effect.void

/** Gauges for the alert rules after a run (per tenant only when FLEXPRICE_METRICS_TENANT_LABELS=true). */
export const ledgerGauges = (repo: SyncBatchRepo, scope: TenantScope) =>
  Effect.gen(function* () {
    const tags = yield* Metrics.tenantTags(scope)
    const counts = yield* repo.statusCounts
    const total = (st: string) => counts.filter((c) => c.status === st).reduce((n, c) => n + c.count, 0)
    yield* Metric.set(Metric.taggedWithLabels(Metrics.syncPendingBatches, tags), total("pending") + total("sending"))
    yield* Metric.set(Metric.taggedWithLabels(Metrics.syncFailedBatches, tags), total("failed"))
    const oldest = yield* repo.oldestUnsyncedWindow
    const nowMs = yield* Clock.currentTimeMillis
    yield* Metric.set(
      Metric.taggedWithLabels(Metrics.syncOldestUnsyncedWindowAgeSeconds, tags),
      Option.match(oldest, { onNone: () => 0, onSome: (d) => Math.max(0, (nowMs - d.getTime()) / 1000) })
    )
  })

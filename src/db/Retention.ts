/**
 * Retention, hourly inside `serve`:
 *   - webhook deliveries and sync run records older than a configured age are deleted;
 *   - final sync batches (synced, skipped) whose windows are older than
 *     FLEXPRICE_RETENTION_SYNC_BATCHES_DAYS (never less than Stripe's 35-day horizon) are
 *     archived: moved into per-(customer, meter, hour) summaries that keep the whole-unit carry
 *     and reconciliation's figures exact (src/repositories/LedgerArchiveRepo.ts). Pending, sending
 *     and failed batches stay whatever their age: they await a run or an operator;
 *   - the ledger's monthly partitions are created ahead and emptied past months dropped.
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Config, Effect, Layer, Schedule } from "effect"
import { LedgerArchiveRepo } from "../repositories/LedgerArchiveRepo.js"
import { WebhookEventRepo } from "../repositories/WebhookEventRepo.js"
import { STRIPE_MAX_AGE_MS } from "../sync/Windows.js"

const STRIPE_BATCH_HORIZON_DAYS = STRIPE_MAX_AGE_MS / 86_400_000
import { asSystem } from "./RowSecurity.js"
import { integerSetting } from "../config/Settings.js"

const days = (name: string, fallback: number, min = 1, why?: string) =>
  integerSetting(name, { default: fallback, min, ...(why ? { why } : {}) })

export const RetentionConfig = Config.all({
  webhookEventDays: days("FLEXPRICE_RETENTION_WEBHOOK_EVENTS_DAYS", 90),
  syncRunDays: days("FLEXPRICE_RETENTION_SYNC_RUNS_DAYS", 90),
  // Inside Stripe's horizon a batch may still be sent, verified against Stripe (ResendGuard) or
  // re-evaluated, and all of that reads batch rows: archiving there would lose them.
  syncBatchDays: days("FLEXPRICE_RETENTION_SYNC_BATCHES_DAYS", STRIPE_BATCH_HORIZON_DAYS, STRIPE_BATCH_HORIZON_DAYS, "Stripe's meter event horizon")
})

const DAY_MS = 86_400_000
const HOUR_MS = 3_600_000
/** Months of ledger partitions created ahead of the current one. */
const PARTITION_MONTHS_AHEAD = 2

/**
 * Where archiving stops: `days` before now, down to an hour boundary, one more hour earlier. The
 * hour boundary keeps reconciliation's hours whole; the extra hour keeps clear of the hour a
 * batch at the very edge of Stripe's horizon may still be verified against (ResendGuard reads
 * the whole hour of its batch).
 */
export const archiveCutoff = (nowMs: number, days: number): Date =>
  new Date(Math.floor((nowMs - days * DAY_MS) / HOUR_MS) * HOUR_MS - HOUR_MS)

/** Archives the ledger before the configured horizon as of `now` and keeps its partitions in shape. */
export const archiveLedgerAt = Effect.fn("Retention.archiveLedger")(function* (now: number) {
  const config = yield* RetentionConfig
  const archive = yield* LedgerArchiveRepo
  const cutoff = archiveCutoff(now, config.syncBatchDays)
  const moved = yield* archive.archiveBefore(cutoff)
  const partitions = yield* archive.maintainPartitions(new Date(now), PARTITION_MONTHS_AHEAD, cutoff)
  if (moved.batches + partitions.created + partitions.dropped > 0)
    yield* Effect.logInfo("ledger archived", {
      batches: moved.batches,
      summaries: moved.summaries,
      partitions_created: partitions.created,
      partitions_dropped: partitions.dropped,
      cutoff: cutoff.toISOString()
    })
  return { cutoff, ...moved, partitionsCreated: partitions.created, partitionsDropped: partitions.dropped }
})

/** One pruning pass; returns how many rows went. */
export const pruneOnce = Effect.fn("Retention.prune")(function* () {
  const config = yield* RetentionConfig
  const sql = yield* PgClient.PgClient
  const webhooks = yield* WebhookEventRepo
  const now = yield* Clock.currentTimeMillis
  const webhookEvents = yield* webhooks.pruneBefore(new Date(now - config.webhookEventDays * DAY_MS))
  const syncRuns = (yield* sql`DELETE FROM stripe_sync_runs WHERE started_at < ${new Date(now - config.syncRunDays * DAY_MS)} RETURNING id`.pipe(
    asSystem("retention prunes every tenant")
  )).length
  if (webhookEvents + syncRuns > 0) yield* Effect.logInfo("retention pruned old rows", { webhook_events: webhookEvents, sync_runs: syncRuns })
  const ledger = yield* archiveLedgerAt(now)
  return { webhookEvents, syncRuns, archivedBatches: ledger.batches }
})

/** Hourly pruning inside `serve`; a failed pass is logged and retried next hour. */
export const RetentionLive = Layer.scopedDiscard(
  Effect.forkScoped(
    pruneOnce().pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("retention pass failed", cause)),
      Effect.repeat(Schedule.spaced("1 hour"))
    )
  )
)

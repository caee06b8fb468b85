/**
 * Retention: webhook deliveries and sync run records older than a configured age are pruned,
 * hourly, by `serve`. Sync batches are NOT pruned: the ledger is the proof of what Stripe was
 * sent, and whole-unit carries are derived from it (aggregated − sent over all batches).
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Config, Effect, Layer, Schedule } from "effect"
import { WebhookEventRepo } from "../repositories/WebhookEventRepo.js"

const days = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.withDefault(fallback),
    Config.validate({ message: "expected a whole number of days ≥ 1", validation: (n) => n >= 1 })
  )

export const RetentionConfig = Config.all({
  webhookEventDays: days("FLEXPRICE_RETENTION_WEBHOOK_EVENTS_DAYS", 90),
  syncRunDays: days("FLEXPRICE_RETENTION_SYNC_RUNS_DAYS", 90)
})

const DAY_MS = 86_400_000

/** One pruning pass; returns how many rows went. */
export const pruneOnce = Effect.gen(function* () {
  const config = yield* RetentionConfig
  const sql = yield* PgClient.PgClient
  const webhooks = yield* WebhookEventRepo
  const now = yield* Clock.currentTimeMillis
  const webhookEvents = yield* webhooks.pruneBefore(new Date(now - config.webhookEventDays * DAY_MS))
  const syncRuns = (yield* sql`DELETE FROM stripe_sync_runs WHERE started_at < ${new Date(now - config.syncRunDays * DAY_MS)} RETURNING id`).length
  if (webhookEvents + syncRuns > 0) yield* Effect.logInfo("retention pruned old rows", { webhook_events: webhookEvents, sync_runs: syncRuns })
  return { webhookEvents, syncRuns }
}).pipe(Effect.withSpan("retention.prune"))

/** Hourly pruning inside `serve`; a failed pass is logged and retried next hour. */
export const RetentionLive = Layer.scopedDiscard(
  Effect.forkScoped(
    pruneOnce.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("retention pass failed", cause)),
      Effect.repeat(Schedule.spaced("1 hour"))
    )
  )
)

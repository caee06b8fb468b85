/** Handlers of the sync group: HTTP ↔ SyncService / SyncBatchRepo / reconciliation. */
import { HttpApiBuilder } from "@effect/platform"
import { Clock, Effect, Option } from "effect"
import { Conflict, InternalError, InvalidInput } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import { StripeConfigRepo } from "../repositories/StripeConfigRepo.js"
import { type BatchRow, SyncBatchRepo } from "../repositories/SyncBatchRepo.js"
import { AuditLog } from "../security/AuditLog.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { reconcile } from "../sync/Reconciliation.js"
import { SyncService } from "../sync/SyncService.js"
import { CallBudget } from "../sync/CallBudget.js"
import { countingRequests } from "../stripe/RequestCount.js"
import { FlexPriceApi } from "./Api.js"
import { orUnavailable } from "./Errors.js"
import { iso, isoOrNull, sourceIp, toDate, toDateOrUndefined } from "./Params.js"

export const batchView = (b: BatchRow) => ({
  id: b.id,
  customer_id: b.customerId,
  meter_id: b.meterId,
  event_type: b.eventType,
  window_start: iso(b.windowStart),
  window_end: iso(b.windowEnd),
  sequence: b.sequence,
  aggregated_quantity: b.aggregatedQuantity,
  sent_quantity: b.sentQuantity,
  event_count: b.eventCount,
  identifier: b.identifier,
  provider_meter_id: b.providerMeterId,
  sync_status: b.syncStatus,
  skip_reason: b.skipReason,
  retry_count: b.retryCount,
  error_code: b.errorCode,
  error_message: b.errorMessage,
  watermark: iso(b.watermark),
  first_sent_at: isoOrNull(b.firstSentAt),
  created_at: iso(b.createdAt),
  synced_at: isoOrNull(b.syncedAt)
})

const notConfigured = () =>
  InvalidInput.of("stripe_not_configured", "Stripe is not configured for this environment (PUT /v1/stripe/config)")

export const SyncHttpLive = HttpApiBuilder.group(FlexPriceApi, "sync", (handlers) =>
  Effect.gen(function* () {
    const service = yield* SyncService
    const repo = yield* SyncBatchRepo
    const configs = yield* StripeConfigRepo
    const accounts = yield* StripeAccounts
    const stripe = yield* StripeClient
    const watermarks = yield* IngestWatermark
    const audit = yield* AuditLog
    const budget = yield* CallBudget
    // a reconciliation on request spends the tenant's Stripe call budget like a scheduled one
    const reconcileLive = (from: Date, to: Date) =>
      countingRequests(reconcile(from, to), (requests) => Effect.flatMap(CurrentTenant, (scope) => budget.spend(scope, requests))).pipe(
        Effect.provideService(SyncBatchRepo, repo),
        Effect.provideService(StripeAccounts, accounts),
        Effect.provideService(StripeClient, stripe)
      )
    const deps = yield* Effect.context<import("../repositories/CustomerMappingRepo.js").CustomerMappingRepo | import("../repositories/MeterMappingRepo.js").MeterMappingRepo>()

    return handlers
      .handle("manual", ({ payload }) =>
        Effect.gen(function* () {
          const from = toDate(payload.window_start)
          const to = toDate(payload.window_end)
          if (to.getTime() <= from.getTime()) return yield* InvalidInput.of("invalid_range", "window_end must be after window_start")
          if (to.getTime() - from.getTime() > 35 * 86_400_000)
            return yield* InvalidInput.of("invalid_range", "a manual sync covers at most 35 days (Stripe's limit)")
          // Read-your-writes: every event acknowledged before this request is stamped at or below this
          // instant (read on the clock ingest stamps come from)
          const acknowledgedBefore = yield* watermarks.clock
          const report = yield* service.runCurrent({ trigger: "manual", windows: { from, to }, dryRun: payload.dry_run, acknowledgedBefore })
          const counts = report.windows.length === 0
            ? new Map<number, { pending: number; sending: number; synced: number; failed: number; skipped: number }>()
            : yield* repo.countsByWindow(report.windows[0]!.windowStart, report.windows[report.windows.length - 1]!.windowEnd)
          return {
            run_id: report.runId,
            dry_run: payload.dry_run,
            status: report.status,
            watermark: iso(report.watermark),
            windows: report.windows.map((w) => ({
              window_start: iso(w.windowStart),
              window_end: iso(w.windowEnd),
              groups: w.groups,
              quantity: w.quantity,
              send_quantity: w.sendQuantity,
              batches_created: w.batchesCreated,
              batches: counts.get(w.windowStart.getTime()) ?? { pending: 0, sending: 0, synced: 0, failed: 0, skipped: 0 }
            })),
            batches_created: report.batchesCreated,
            batches_synced: report.batchesSynced,
            batches_failed: report.batchesFailed,
            batches_skipped: report.batchesSkipped,
            stripe_requests: report.stripeRequests,
            excluded_events: report.excludedEvents,
            error: report.error
          }
        }).pipe(
          Effect.catchTags({
            WindowNotClosed: (e) =>
              Effect.fail(
                InvalidInput.of(
                  "window_not_closed",
                  `window ${iso(e.windowStart)}–${iso(e.windowEnd)} is not closed; it can be synced from ${iso(e.dueAt)}`,
                  { window_start: iso(e.windowStart), window_end: iso(e.windowEnd), due_at: iso(e.dueAt) }
                )
              ),
            LeaseBusy: () => Effect.fail(Conflict.of("sync_in_progress", "a sync of this environment is running; retry shortly")),
            LeaseLost: () => Effect.fail(InternalError.of("sync_interrupted", "the sync lost its lease and was stopped; retry")),
            StripeNotConfigured: () => Effect.fail(notConfigured())
          }),
          orUnavailable
        )
      )
      .handle("status", () =>
        Effect.gen(function* () {
          const config = yield* configs.get
          const last = yield* repo.lastRun
          const counts = yield* repo.statusCounts
          const recent = yield* repo.recentStats(new Date((yield* Clock.currentTimeMillis) - 86_400_000))
          const oldest = yield* repo.oldestUnsyncedWindow
          const circuit = yield* accounts.refFor.pipe(
            Effect.flatMap((ref) => stripe.circuitState(ref)),
            Effect.orElseSucceed(() => "unknown")
          )
          const byStatus = { pending: 0, sending: 0, synced: 0, failed: 0, skipped: 0 }
          const byReason: Record<string, number> = {}
          for (const c of counts) {
            byStatus[c.status] += c.count
            if (c.status === "skipped" && c.skipReason) byReason[c.skipReason] = (byReason[c.skipReason] ?? 0) + c.count
          }
          const attempted = recent.synced + recent.failed
          return {
            configured: Option.isSome(config),
            sync_enabled: Option.match(config, { onNone: () => false, onSome: (c) => c.syncEnabled }),
            paused: Option.match(config, {
              onNone: () => null,
              onSome: (c) => (c.syncPaused ? { code: c.syncPaused.code, message: c.syncPaused.message, since: iso(c.syncPaused.since) } : null)
            }),
            transport: Option.match(config, { onNone: () => null, onSome: (c) => c.transport }),
            aggregation_window_minutes: Option.match(config, { onNone: () => null, onSome: (c) => c.aggregationWindowMinutes }),
            grace_period_minutes: Option.match(config, { onNone: () => null, onSome: (c) => c.gracePeriodMinutes }),
            last_run: Option.match(last, {
              onNone: () => null,
              onSome: (r) => ({
                id: r.id,
                trigger: r.trigger,
                status: r.status,
                started_at: iso(r.startedAt),
                finished_at: isoOrNull(r.finishedAt),
                windows: r.windows,
                batches_created: r.batchesCreated,
                batches_synced: r.batchesSynced,
                batches_failed: r.batchesFailed,
                batches_skipped: r.batchesSkipped,
                error: r.error
              })
            }),
            success_rate_24h: attempted === 0 ? null : recent.synced / attempted,
            counts: byStatus,
            skipped_by_reason: byReason,
            oldest_unsynced_window: Option.match(oldest, { onNone: () => null, onSome: iso }),
            lag_seconds: { p50: recent.lagP50Seconds, p95: recent.lagP95Seconds },
            circuit_state: circuit
          }
        }).pipe(orUnavailable)
      )
      .handle("batches", ({ urlParams }) =>
        Effect.gen(function* () {
          const limit = urlParams.limit ?? 100
          const before = urlParams.cursor === undefined ? undefined : { windowStart: urlParams.cursor.key, id: urlParams.cursor.id }
          const rows = yield* repo.list({
            status: urlParams.status,
            customerId: urlParams.customer_id,
            meterId: urlParams.meter_id,
            from: toDateOrUndefined(urlParams.from),
            to: toDateOrUndefined(urlParams.to),
            limit: limit + 1,
            before
          })
          const page = rows.slice(0, limit)
          return {
            batches: page.map(batchView),
            next_cursor: rows.length > limit ? { key: page[page.length - 1]!.windowStart, id: page[page.length - 1]!.id } : null
          }
        }).pipe(orUnavailable)
      )
      .handle("retryBatches", ({ payload }) =>
        Effect.gen(function* () {
          const from = toDateOrUndefined(payload.from)
          const to = toDateOrUndefined(payload.to)
          if (from && to && to.getTime() <= from.getTime()) return yield* InvalidInput.of("invalid_range", "to must be after from")
          const now = new Date(yield* Clock.currentTimeMillis)
          const ids = yield* repo.requeueFailed(
            {
              needsReview: payload.status === "needs_review",
              customerId: payload.customer_id,
              meterId: payload.meter_id,
              errorCode: payload.error_code,
              from,
              to,
              dryRun: payload.dry_run
            },
            now
          )
          if (!payload.dry_run)
            yield* audit.record({
              action: "sync.batches_retry",
              actor: "api",
              target: "stripe_sync_batches",
              sourceIp: yield* sourceIp,
              details: {
                requeued: ids.length,
                filter: {
                  status: payload.status,
                  meter_id: payload.meter_id ?? null,
                  customer_id: payload.customer_id ?? null,
                  error_code: payload.error_code ?? null,
                  from: from ? iso(from) : null,
                  to: to ? iso(to) : null
                }
              }
            })
          return { requeued: ids.length, dry_run: payload.dry_run, batch_ids: ids.slice(0, 100) }
        }).pipe(orUnavailable)
      )
      .handle("reconciliation", ({ urlParams }) =>
        Effect.gen(function* () {
          const from = toDate(urlParams.from)
          const to = toDate(urlParams.to)
          if (to.getTime() <= from.getTime()) return yield* InvalidInput.of("invalid_range", "to must be after from")
          if (to.getTime() - from.getTime() > 35 * 86_400_000)
            return yield* InvalidInput.of("invalid_range", "reconciliation covers at most 35 days")
          const r = yield* reconcileLive(from, to).pipe(Effect.provide(deps))
          return {
            from: iso(r.from),
            to: iso(r.to),
            rows: r.rows.map((x) => ({
              customer_id: x.customerId,
              stripe_customer_id: x.stripeCustomerId,
              meter_id: x.meterId,
              stripe_meter_id: x.stripeMeterId,
              hour: iso(x.hour),
              synced: x.synced,
              stripe: x.stripe,
              drift: x.drift
            })),
            summary: {
              pairs: r.summary.pairs,
              rows: r.summary.rows,
              rows_with_drift: r.summary.rowsWithDrift,
              synced_total: r.summary.syncedTotal,
              stripe_total: r.summary.stripeTotal,
              drift_total: r.summary.driftTotal,
              unavailable_pairs: r.summary.unavailablePairs
            }
          }
        }).pipe(
          Effect.catchTags({
            StripeNotConfigured: () => Effect.fail(notConfigured()),
            DecryptionFailed: (e) => Effect.fail(InternalError.of(e.code, e.message))
          }),
          orUnavailable
        )
      )
  })
)

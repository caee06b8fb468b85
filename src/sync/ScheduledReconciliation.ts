/**
 * Reconciliation on a schedule, with repair (issue #12 item 5). Every
 * FLEXPRICE_RECONCILIATION_INTERVAL_SECONDS each sync-enabled tenant environment's ledger is
 * compared with Stripe's hourly meter event summaries (Reconciliation.ts) over the last
 * FLEXPRICE_RECONCILIATION_LOOKBACK_HOURS, inside Stripe's 35-day horizon. A synced batch goes
 * back to pending only when Stripe's summary *proves* it absent:
 *
 *  - Stripe sums as doubles, so every comparison is at double precision (SummaryTolerance.ts),
 *    never exact-decimal equality;
 *  - summaries lag ("may be delayed"): an hour counts only when every send in it is older than
 *    FLEXPRICE_RECONCILIATION_SETTLE_SECONDS, and no batch of it is pending, sending or failed;
 *  - an hour whose batches were sent before the customer's or meter's mapping last changed is
 *    left alone (Stripe's figure is for the current Stripe customer and meter only);
 *  - the missing batches must be the *only* subset of the hour's synced batches whose removal
 *    explains Stripe's total (all subsets are tried; hours with more than MAX_SUBSET_BATCHES
 *    batches are not judged). Ambiguity → nothing is re-queued, the drift stays reported.
 *
 * A re-queued batch keeps its identifier and amount; the next sync run sends it (past Stripe's
 * 24 h dedup the ResendGuard checks Stripe again first). Missing again after one re-queue →
 * `failed` / needs_review for an operator. Stripe less than the ledger is repaired; Stripe more
 * than the ledger is never "repaired" (nothing is taken back), only reported.
 *
 * Its Stripe reads are spent from the tenant's call budget (CallBudget.ts), like a sync run's sends.
 * Stripe is read outside the tenant's sync lease; the re-queue is made under it, after the hour
 * is judged again on the ledger as it is then, so it never races the tenant's sync run.
 */
import { Clock, Config, Duration, Effect, Layer, Metric, Option } from "effect"
import * as Decimal from "../domain/Decimal.js"
import type { TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import * as Metrics from "../observability/Metrics.js"
import { BatchRepairRepo, type SyncedInHour } from "../repositories/BatchRepairRepo.js"
import { StripeConfigRepo } from "../repositories/StripeConfigRepo.js"
import { matchesDoubleSum } from "../stripe/SummaryTolerance.js"
import { countingRequests } from "../stripe/RequestCount.js"
import { CallBudget } from "./CallBudget.js"
import { reconcile, type ReconciliationRow } from "./Reconciliation.js"
import { SyncLease } from "./SyncLease.js"
import * as W from "./Windows.js"
import { integerSetting } from "../config/Settings.js"

const HOUR_MS = 3_600_000
/** 2^12 subsets at most per hour: a base batch and a handful of late deltas is the usual case. */
export const MAX_SUBSET_BATCHES = 12

export const ReconciliationSettings = Config.all({
  /** 0 turns the scheduled pass off (reconciliation stays available on request). */
  intervalSeconds: integerSetting("FLEXPRICE_RECONCILIATION_INTERVAL_SECONDS", { default: 86_400, min: 0 }),
  lookbackHours: integerSetting("FLEXPRICE_RECONCILIATION_LOOKBACK_HOURS", { default: 840, min: 1, max: 840, why: "35 days" }),
  settleSeconds: integerSetting("FLEXPRICE_RECONCILIATION_SETTLE_SECONDS", { default: 900, min: 0 })
})
export type ReconciliationSettings = Config.Config.Success<typeof ReconciliationSettings>

export interface RepairReport {
  readonly hoursWithDrift: number
  readonly hoursProven: number
  readonly hoursUnproven: number
  readonly requeued: number
  readonly needsReview: number
}

const absOf = (v: string) => (Decimal.isNegative(v) ? Decimal.sub("0", v) : v)

/**
 * The one subset of `synced` whose absence explains `stripe`, or None (none or several do).
 * The empty subset is excluded: the hour drifted, so "nothing missing" does not explain it.
 */
export const uniqueMissingSubset = (stripe: string, synced: ReadonlyArray<SyncedInHour>): Option.Option<ReadonlyArray<SyncedInHour>> => {
  const n = synced.length
  if (n === 0 || n > MAX_SUBSET_BATCHES) return Option.none()
  let found: ReadonlyArray<SyncedInHour> | undefined
  for (let mask = 1; mask < 1 << n; mask++) {
    const kept = synced.filter((_, i) => (mask & (1 << i)) === 0)
    const explains = matchesDoubleSum(stripe, {
      exact: Decimal.sum(kept.map((b) => b.sentQuantity)),
      absTotal: Decimal.sum(kept.map((b) => absOf(b.sentQuantity))),
      events: kept.length
    })
    if (!explains) continue
    if (found !== undefined) return Option.none()
    found = synced.filter((_, i) => (mask & (1 << i)) !== 0)
  }
  return Option.fromNullable(found)
}

interface HourCheck {
  readonly missing: Option.Option<ReadonlyArray<SyncedInHour>>
  readonly reason: "unsettled" | "mapping_changed" | "ambiguous" | null
  /** the synced batches the proof was made over */
  readonly synced: ReadonlyArray<SyncedInHour>
}

/** Judges one drifted hour against the ledger as it is now. */
const checkHour = (row: ReconciliationRow, settledBefore: number) =>
  Effect.gen(function* () {
    const repairs = yield* BatchRepairRepo
    const batches = yield* repairs.batchesInHour(row.customerId, row.meterId, row.hour, new Date(row.hour.getTime() + HOUR_MS))
    const synced = batches.filter((b) => b.syncStatus === "synced")
    const unsettled =
      batches.some((b) => b.syncStatus === "pending" || b.syncStatus === "sending" || b.syncStatus === "failed") ||
      synced.some((b) => b.syncedAt === null || b.syncedAt.getTime() > settledBefore)
    const changedAt = yield* repairs.mappingChangedAt(row.customerId, row.meterId)
    const remapped = changedAt !== null && synced.some((b) => b.syncedAt !== null && b.syncedAt.getTime() < changedAt.getTime())
    if (unsettled) return { missing: Option.none(), reason: "unsettled", synced } satisfies HourCheck
    if (remapped) return { missing: Option.none(), reason: "mapping_changed", synced } satisfies HourCheck
    const missing = uniqueMissingSubset(row.stripe!, synced)
    return { missing, reason: Option.isNone(missing) ? "ambiguous" : null, synced } satisfies HourCheck
  })

const sameIds = (a: ReadonlyArray<SyncedInHour>, b: ReadonlyArray<SyncedInHour>) =>
  a.length === b.length && a.map((x) => x.id).sort().join() === b.map((x) => x.id).sort().join()

/**
 * One tenant environment (the CurrentTenant): reconcile the lookback, re-queue what is proven
 * missing. Stripe is read without the lease (a long read must not delay the tenant's sync run);
 * the re-queue runs under it, after judging each hour again on the ledger as it is then — a run
 * that sent into the hour meanwhile makes it unsettled, so nothing is re-queued on stale facts.
 */
export const repairMissing = Effect.fn("ScheduledReconciliation.repairMissing")(function* (settings: ReconciliationSettings) {
  const repairs = yield* BatchRepairRepo
  const lease = yield* SyncLease
  const scope = yield* CurrentTenant
  const now = yield* Clock.currentTimeMillis
  // Inside Stripe's horizon with the create margin, so a re-queued batch can still be sent.
  const horizon = now - W.STRIPE_MAX_AGE_MS + W.CREATE_MARGIN_MS
  const from = new Date(Math.ceil(Math.max(horizon, now - settings.lookbackHours * HOUR_MS) / HOUR_MS) * HOUR_MS)
  const settledBefore = now - settings.settleSeconds * 1000
  const to = new Date(Math.floor(settledBefore / HOUR_MS) * HOUR_MS + HOUR_MS)
  const none: RepairReport = { hoursWithDrift: 0, hoursProven: 0, hoursUnproven: 0, requeued: 0, needsReview: 0 }
  if (to.getTime() <= from.getTime()) return none
  const report = yield* reconcile(from, to)
  // Stripe has less than the ledger: the only drift a re-send can repair.
  const drifted = report.rows.filter((r) => !r.matches && r.stripe !== null && Decimal.isNegative(r.drift))
  if (drifted.length === 0) return none
  const judged = yield* Effect.forEach(drifted, (row) => Effect.map(checkHour(row, settledBefore), (check) => ({ row, check })))
  const proven = judged.filter((j) => Option.isSome(j.check.missing))
  for (const { check, row } of judged)
    if (check.reason !== null)
      yield* Effect.logWarning("reconciliation drift not repaired: Stripe's summary does not prove which batches are missing").pipe(
        Effect.annotateLogs({ customer_id: row.customerId, meter_id: row.meterId, hour: row.hour.toISOString(), drift: row.drift, reason: check.reason })
      )
  let requeued = 0
  let review = 0
  if (proven.length > 0)
    yield* lease.withLease(
      scope,
      Effect.forEach(proven, ({ check, row }) =>
        Effect.gen(function* () {
          const again = yield* checkHour(row, settledBefore)
          if (Option.isNone(again.missing) || !sameIds(again.synced, check.synced) || !sameIds(again.missing.value, Option.getOrThrow(check.missing)))
            return
          const r = yield* repairs.requeueMissing(
            again.missing.value.map((b) => b.id),
            new Date(now),
            `Stripe's summary for ${row.hour.toISOString()} is ${row.stripe}, the ledger's synced total ${row.synced}: these batches are absent`
          )
          requeued += r.requeued
          review += r.review
        })
      ),
      { wait: "30 seconds" }
    )
  if (requeued > 0) yield* Metric.incrementBy(Metric.tagged(Metrics.syncBatchesRequeuedTotal, "reason", "reconciliation"), requeued)
  if (review > 0) yield* Metric.incrementBy(Metric.tagged(Metrics.syncBatchesRequeuedTotal, "reason", "needs_review"), review)
  yield* Effect.annotateCurrentSpan({ "reconcile.drifted": drifted.length, "reconcile.requeued": requeued, "reconcile.needs_review": review })
  return {
    hoursWithDrift: drifted.length,
    hoursProven: proven.length,
    hoursUnproven: drifted.length - proven.length,
    requeued,
    needsReview: review
  } satisfies RepairReport
})

/** One scheduled pass over every sync-enabled tenant environment. */
export const reconcileAllTenants = Effect.fn("ScheduledReconciliation.reconcileAllTenants")(function* (settings: ReconciliationSettings) {
  const configs = yield* StripeConfigRepo
  const budget = yield* CallBudget
  const all = yield* configs.listSyncEnabled
  for (const config of all) {
    const scope: TenantScope = config.scope
    yield* countingRequests(repairMissing(settings), (requests) => budget.spend(scope, requests)).pipe(
      Effect.provideService(CurrentTenant, scope),
      Effect.tap((r) =>
        Effect.zipRight(
          Metric.increment(Metric.tagged(Metrics.reconciliationRunsTotal, "outcome", "completed")),
          r.requeued + r.needsReview > 0
            ? Effect.logWarning("scheduled reconciliation re-queued batches missing in Stripe").pipe(
                Effect.annotateLogs({ tenant_id: scope.tenantId, environment_id: scope.environmentId, ...r })
              )
            : Effect.void
        )
      ),
      Effect.catchAllCause((cause) =>
        Effect.zipRight(
          Metric.increment(Metric.tagged(Metrics.reconciliationRunsTotal, "outcome", "failed")),
          Effect.logWarning("scheduled reconciliation failed", cause).pipe(
            Effect.annotateLogs({ tenant_id: scope.tenantId, environment_id: scope.environmentId })
          )
        )
      )
    )
  }
})

/** Add to `serve` next to SyncScheduler.layer. */
export const ReconciliationSchedulerLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const settings = yield* ReconciliationSettings
    if (settings.intervalSeconds === 0) {
      yield* Effect.logInfo("scheduled reconciliation disabled (FLEXPRICE_RECONCILIATION_INTERVAL_SECONDS=0)")
      return
    }
    const interval = Duration.seconds(settings.intervalSeconds)
    yield* Effect.logInfo(`scheduled reconciliation every ${settings.intervalSeconds} s over the last ${settings.lookbackHours} h`)
    yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(Effect.sleep(interval), reconcileAllTenants(settings).pipe(Effect.catchAllCause((c) => Effect.logWarning("reconciliation pass failed", c)))))
    )
  })
)

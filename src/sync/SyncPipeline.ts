/**
 * The sync pipeline of one tenant environment (SPEC §6):
 *
 *   plan due windows → aggregate each (EventStore stream, pages ≤ STRIPE_BATCH_SIZE_LIMIT)
 *   → ledger (batches + window progress in ONE transaction) → re-evaluate skipped batches
 *   → push pending batches in chunks (100 per stream request, one per v1 call) → record.
 *
 * Exactly once rests on three rules:
 * 1. A batch row and the watermark it was aggregated up to commit together, so a crash before
 *    the commit re-aggregates the same rows and a crash after it finds the batch in the ledger.
 * 2. Nothing is sent before its batch is committed, and every resend uses the batch's
 *    deterministic identifier (meter event identifier and Idempotency-Key), which Stripe dedups
 *    for 24 hours.
 * 3. A batch first sent more than FLEXPRICE_SYNC_RESEND_HORIZON_HOURS (23) ago is never resent
 *    blindly: Stripe's meter event summaries for its hour are compared with the ledger. If Stripe
 *    holds exactly the synced total plus the unconfirmed batches, they are marked synced; if it
 *    holds exactly the synced total, they are sent again; anything else is left `failed` with
 *    error_code `needs_review` for an operator (never retried automatically).
 *
 * Progress is kept per (window, meter) plus a per-meter mark (see migrations/0004): late rows
 * of an already synced window become a delta batch with the next sequence; a meter whose mapping
 * appears or comes back later catches up without touching the other meters' progress.
 *
 * The stages, one module each, all taking the run's records (RunContext.ts):
 *   Planning.ts (due windows, bounds) → WindowPass.ts (one window's ledger pass, rule 1)
 *   → Reevaluation.ts (skipped batches whose mappings came back) → Push.ts (pages, chunks,
 *   outcomes, rule 2) with ResendGuard.ts (rule 3); SyncMetrics.ts holds the metric updates.
 * This module keeps `run`: the order of the stages, the run row and the report.
 */
import { PgClient } from "@effect/sql-pg"
import type { SqlError } from "@effect/sql"
import { Clock, Effect, Ref, Stream } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import { EventStore, type EventStoreError } from "../events/EventStore.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import { CustomerMappingRepo } from "../repositories/CustomerMappingRepo.js"
import { MeterMappingRepo } from "../repositories/MeterMappingRepo.js"
import { StripeConfigRepo, type TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import { SyncBatchRepo } from "../repositories/SyncBatchRepo.js"
import { BatchRepairRepo } from "../repositories/BatchRepairRepo.js"
import { WindowGridRepo } from "../repositories/WindowGridRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { makeCustomerLookup } from "./CustomerLookup.js"
import { makeMeterSupport } from "./MeterSupport.js"
import { manualRange, plan, supportedMeters, WindowNotClosed } from "./Planning.js"
import { push } from "./Push.js"
import { reevaluate } from "./Reevaluation.js"
import { requeueRepaired } from "./Repairs.js"
import type { PushCounters, RunContext, RunOptions, RunReport, SyncDeps, WindowRange, WindowReport } from "./RunContext.js"
import { countBatches, ledgerGauges, successRatio, syncErrors } from "./SyncMetrics.js"
import { SyncSettings } from "./SyncSettings.js"
import { processWindow } from "./WindowPass.js"
import type { LeaseLost } from "./SyncLease.js"

export type { RunOptions, RunReport, Trigger, WindowReport } from "./RunContext.js"
export { WindowNotClosed } from "./Planning.js"

/** Read-your-writes: how long a manual sync waits, beyond the watermark lag, for in-flight ingests. */
const READ_YOUR_WRITES_EXTRA_WAIT_MS = 10_000

/** Processed rows of `range` ingested above the run's watermark and at or before `until`. */
const countExcluded = (ctx: RunContext, range: WindowRange, until: Date) =>
  ctx.meterIds.length === 0
    ? Effect.succeed(0)
    : ctx.deps.store
        .aggregateBillable({
          scope: ctx.scope,
          windowStart: range.from,
          windowEnd: range.to,
          ingestedAfter: ctx.watermark,
          ingestedBefore: until,
          meterIds: ctx.meterIds,
          pageSize: ctx.deps.settings.shared.batchSizeLimit
        })
        .pipe(Stream.runFold(0, (n, g) => n + g.eventCount))

/** A run that ledgers this many batches refreshes the ledger's planner statistics before pushing. */
const STATISTICS_AFTER_BATCHES = 10_000

/** The run error while the tenant's push is paused after an authentication failure. */
export const SYNC_PAUSED = "sync_paused"

const noCounts = { windows: 0, batchesCreated: 0, batchesSynced: 0, batchesFailed: 0, batchesSkipped: 0 }

/** Plan, ledger, re-evaluate, push: the run's body between its start and finish rows. */
const runStages = (ctx: RunContext, runId: string | null, excludedEvents: number) =>
  Effect.gen(function* () {
    const { deps, dryRun } = ctx
    const { repo } = deps
    // ---- plan + ledger
    const planned = yield* plan(ctx)
    const windows: Array<WindowReport> = []
    for (const work of planned.windows) windows.push(yield* processWindow(ctx, work))
    if (planned.newDueThrough !== undefined && !dryRun) {
      for (const m of ctx.meterIds) yield* repo.advanceMark(m, ctx.watermark, planned.newDueThrough)
    }
    const created = windows.reduce((n, w) => n + w.batchesCreated, 0)
    if (created >= STATISTICS_AFTER_BATCHES) yield* repo.refreshStatistics
    const skippedAtLedger = windows.reduce((n, w) => n + (dryRun ? 0 : w.skipped), 0)
    yield* countBatches("skipped", skippedAtLedger)
    if (dryRun) {
      return {
        runId,
        status: "dry_run" as const,
        watermark: ctx.watermark,
        windows,
        batchesCreated: 0,
        batchesSynced: 0,
        batchesFailed: 0,
        batchesSkipped: 0,
        stripeRequests: 0,
        excludedEvents,
        error: null
      } satisfies RunReport
    }

    // ---- re-queue repaired drops, re-evaluate, push
    // Paused after Stripe refused the tenant's key (Push.ts): the ledger keeps every window, nothing
    // is sent or charged an attempt until the configuration changes.
    if (ctx.config.syncPaused) {
      // counted each run, so StripeAuthenticationFailures (flexprice_errors_total) keeps firing
      // while the pause lasts, not only in the 15 minutes after the refused call
      yield* syncErrors(ctx.config.syncPaused.code)
      return {
        runId,
        status: "partial" as const,
        watermark: ctx.watermark,
        windows,
        batchesCreated: created,
        batchesSynced: 0,
        batchesFailed: 0,
        batchesSkipped: skippedAtLedger,
        stripeRequests: 0,
        excludedEvents,
        error: SYNC_PAUSED
      } satisfies RunReport
    }
    yield* requeueRepaired(deps.repairs, ctx.now)
    yield* reevaluate(ctx)
    const counters = yield* Ref.make<PushCounters>({ synced: 0, failed: 0, skipped: 0, requests: 0, stop: null, deferred: null })
    const pushError = yield* push(ctx, counters).pipe(
      Effect.as(null as string | null),
      Effect.catchTags({
        StripeNotConfigured: (e) => Effect.succeed(e.code as string | null),
        DecryptionFailed: (e) => Effect.succeed(e.code as string | null)
      })
    )
    const c = yield* Ref.get(counters)
    const error = pushError ?? c.stop ?? c.deferred ?? ctx.supported.readError
    const status: RunReport["status"] = error === null ? "completed" : "partial"
    yield* successRatio(c.synced, c.synced + c.failed)
    return {
      runId,
      status,
      watermark: ctx.watermark,
      windows,
      batchesCreated: created,
      batchesSynced: c.synced,
      batchesFailed: c.failed,
      batchesSkipped: skippedAtLedger + c.skipped,
      stripeRequests: c.requests,
      excludedEvents,
      error
    } satisfies RunReport
  })

export class SyncPipeline extends Effect.Service<SyncPipeline>()("flexprice/SyncPipeline", {
  effect: Effect.gen(function* () {
    const watermarks = yield* IngestWatermark
    const meterMappings = yield* MeterMappingRepo
    const grids = yield* WindowGridRepo
    const deps: SyncDeps = {
      sql: yield* PgClient.PgClient,
      store: yield* EventStore,
      repo: yield* SyncBatchRepo,
      repairs: yield* BatchRepairRepo,
      customerMappings: yield* CustomerMappingRepo,
      accounts: yield* StripeAccounts,
      stripe: yield* StripeClient,
      settings: yield* SyncSettings,
      reporter: yield* ErrorReporter,
      configs: yield* StripeConfigRepo
    }
    const { repo } = deps
    const meterSupport = makeMeterSupport(deps.stripe)

    /**
     * One run for the CurrentTenant. The caller holds the tenant's lease (SyncService does).
     * Fails with WindowNotClosed for a manual range holding an open window.
     */
    const run: (
      config: TenantStripeConfig,
      options: RunOptions
    ) => Effect.Effect<RunReport, WindowNotClosed | SqlError.SqlError | EventStoreError | LeaseLost, CurrentTenant> = Effect.fn(
      "SyncPipeline.run"
    )(function* (config: TenantStripeConfig, options: RunOptions) {
      yield* Effect.annotateCurrentSpan({ "sync.trigger": options.trigger, "sync.dry_run": options.dryRun === true })
      const scope = yield* CurrentTenant
      const now = yield* Clock.currentTimeMillis
      const dryRun = options.dryRun === true
      // one read of the grid per run: PUT /v1/stripe/config changes it only under the lease we hold
      const grid = yield* grids.grid(config.aggregationWindowMinutes)
      const range = options.windows ? yield* manualRange(config, grid, options.windows, now) : undefined
      const wm =
        options.acknowledgedBefore === undefined
          ? yield* watermarks.current
          : yield* watermarks.covering(options.acknowledgedBefore, READ_YOUR_WRITES_EXTRA_WAIT_MS)
      yield* Effect.annotateCurrentSpan({
        tenant_id: scope.tenantId,
        environment_id: scope.environmentId,
        "sync.watermark": wm.toISOString()
      })

      const mappings = yield* meterMappings.listEnabled
      const account = yield* Effect.either(deps.accounts.refFor)
      const ctx: RunContext = {
        deps,
        scope,
        config,
        grid,
        now,
        watermark: wm,
        dryRun,
        range,
        mappingByMeter: new Map(mappings.map((m) => [m.meterId, m])),
        customers: makeCustomerLookup(deps.customerMappings),
        // a paused tenant's key is known to be refused: its Stripe meters are not read either
        supported: yield* supportedMeters(deps, meterSupport, mappings, config.syncPaused ? undefined : account),
        meterIds: mappings.map((m) => m.meterId),
        account
      }
      const excludedEvents =
        range && options.acknowledgedBefore && wm.getTime() < options.acknowledgedBefore.getTime()
          ? yield* countExcluded(ctx, range, options.acknowledgedBefore)
          : 0
      const runId = dryRun ? null : yield* repo.startRun(options.trigger, new Date(now))

      const report = yield* runStages(ctx, runId, excludedEvents).pipe(
        Effect.tapErrorCause((cause) =>
          runId === null
            ? Effect.void
            : Clock.currentTimeMillis.pipe(
                Effect.flatMap((t) => repo.finishRun(runId, "failed", noCounts, new Date(t), String(cause).slice(0, 500))),
                Effect.ignore
              )
        )
      )
      if (runId !== null) {
        yield* repo.finishRun(
          runId,
          report.status === "dry_run" ? "completed" : report.status,
          {
            windows: report.windows.length,
            batchesCreated: report.batchesCreated,
            batchesSynced: report.batchesSynced,
            batchesFailed: report.batchesFailed,
            batchesSkipped: report.batchesSkipped
          },
          new Date(yield* Clock.currentTimeMillis),
          report.error
        )
        yield* ledgerGauges(repo, scope)
      }
      yield* Effect.annotateCurrentSpan({
        "sync.windows": report.windows.length,
        "sync.batches_created": report.batchesCreated,
        "sync.batches_synced": report.batchesSynced,
        "sync.batches_failed": report.batchesFailed,
        "sync.status": report.status
      })
      return report
    })

    return { run } as const
  })
}) {}

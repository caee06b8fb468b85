/**
 * Runs the pipeline for tenants under their lease: every sync-enabled tenant (scheduler, bench,
 * tests) or the current one (manual sync). Tenants run in parallel, bounded by
 * FLEXPRICE_SYNC_TENANT_CONCURRENCY; one tenant's failure is logged and does not stop another.
 *
 * Every run is counted by outcome (`flexprice_sync_runs_total{status}`); a failed scheduled run
 * is also reported to Sentry. The Stripe requests each run made are spent from the tenant's
 * call budget (CallBudget.ts).
 */
import type { SqlError } from "@effect/sql"
import { Cause, Duration, Effect, Metric, MetricLabel, Option } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import { EventStore, type EventStoreError } from "../events/EventStore.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { StripeConfigRepo, type TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import { StripeNotConfigured } from "../stripe/StripeAccounts.js"
import { countingRequests } from "../stripe/RequestCount.js"
import { CallBudget } from "./CallBudget.js"
import { type LeaseBusy, type LeaseLost, SyncLease } from "./SyncLease.js"
import { type RunOptions, type RunReport, SyncPipeline, type WindowNotClosed } from "./SyncPipeline.js"
import { SyncSettings } from "./SyncSettings.js"

export interface TenantOutcome {
  readonly tenantId: string
  readonly environmentId: string
  readonly report: RunReport | null
  /** `lease_busy` when another runner holds the tenant; otherwise what failed */
  readonly error: string | null
}

export type RunError = WindowNotClosed | SqlError.SqlError | EventStoreError | LeaseBusy | LeaseLost

const countRun = (status: string) =>
  Metric.increment(Metric.taggedWithLabels(Metrics.syncRunsTotal, [MetricLabel.make("status", status)]))

export class SyncService extends Effect.Service<SyncService>()("flexprice/SyncService", {
  effect: Effect.gen(function* () {
    const pipeline = yield* SyncPipeline
    const lease = yield* SyncLease
    const configs = yield* StripeConfigRepo
    const settings = yield* SyncSettings
    const reporter = yield* ErrorReporter
    const backend = MetricLabel.make("backend", (yield* EventStore).backend)
    const budget = yield* CallBudget

    /** Aggregate groups each window pass returned (the aggregation query's result size). */
    const recordResultSizes = (report: RunReport) =>
      Effect.forEach(
        report.windows,
        (w) => Metric.update(Metric.taggedWithLabels(Metrics.aggregationResultGroups, [backend]), w.groups),
        { discard: true }
      )

    /** One tenant under its lease (`wait`: how long to wait for a busy lease). */
    const runTenant = (
      config: TenantStripeConfig,
      options: RunOptions,
      leaseOptions: { readonly wait?: Duration.DurationInput } = {}
    ): Effect.Effect<RunReport, RunError> =>
      // Every request the run sends is spent from the budget, whatever sent it: meter events,
      // the stream session, the resend guard's summary reads, retries, and a failed run's too.
      countingRequests(lease.withLease(config.scope, pipeline.run(config, options), leaseOptions), (requests) =>
        budget.spend(config.scope, requests)
      ).pipe(
        Effect.provideService(CurrentTenant, config.scope),
        Effect.tapBoth({
          onSuccess: (report) => Effect.all([countRun(report.status), recordResultSizes(report)], { discard: true }),
          onFailure: (e) =>
            countRun(e._tag === "LeaseBusy" ? "lease_busy" : e._tag === "WindowNotClosed" ? "rejected" : "failed")
        }),
        Effect.tapDefect(() => countRun("failed"))
      )

    const outcomeOf = (config: TenantStripeConfig, options: RunOptions) =>
      runTenant(config, options).pipe(
        Effect.map((report): TenantOutcome => ({ ...config.scope, report, error: null })),
        Effect.catchAllCause((cause) => {
          const failure = Cause.failureOption(cause)
          const error = Option.match(failure, {
            onNone: () => (Cause.isInterruptedOnly(cause) ? "interrupted" : "defect"),
            onSome: (e) => (e._tag === "LeaseBusy" ? "lease_busy" : e._tag)
          })
          return (error === "lease_busy"
            ? Effect.void
            : Effect.logError("sync run failed").pipe(
                Effect.annotateLogs({ tenant_id: config.scope.tenantId, environment_id: config.scope.environmentId, error }),
                Effect.annotateLogs("cause", Cause.pretty(cause)),
                Effect.zipRight(
                  error === "interrupted" ? Effect.void : reporter.report(Option.getOrElse(failure, () => Cause.squash(cause)), {
                    area: "sync",
                    code: `sync_run_${error}`,
                    tenantId: config.scope.tenantId,
                    environmentId: config.scope.environmentId,
                    extra: { trigger: options.trigger }
                  })
                )
              )
          ).pipe(Effect.as({ ...config.scope, report: null, error } satisfies TenantOutcome))
        })
      )

    /** Every sync-enabled tenant, in parallel (bounded). Never fails for one tenant's failure. */
    const runAll = Effect.fn("SyncService.runAll")(function* (trigger: RunOptions["trigger"] = "schedule") {
      yield* Effect.annotateCurrentSpan({ "sync.trigger": trigger })
      const all = yield* configs.listSyncEnabled
      return yield* Effect.forEach(all, (c) => outcomeOf(c, { trigger }), {
        concurrency: settings.shared.tenantConcurrency
      })
    })

    /** The current tenant (manual sync): waits up to 30 s for a scheduled run holding the lease. */
    const runCurrent = (options: RunOptions) =>
      Effect.gen(function* () {
        const config = yield* configs.get
        if (Option.isNone(config))
          return yield* new StripeNotConfigured({
            code: "stripe_not_configured",
            message: "Stripe is not configured for this environment (PUT /v1/stripe/config)"
          })
        return yield* runTenant(config.value, options, { wait: options.dryRun ? 0 : "30 seconds" })
      })

    return { runTenant, runAll, runCurrent, outcomeOf } as const
  })
}) {}

/**
 * Runs the pipeline for tenants under their lease: every sync-enabled tenant (scheduler, bench,
 * tests) or the current one (manual sync). Tenants run in parallel, bounded by
 * FLEXPRICE_SYNC_TENANT_CONCURRENCY; one tenant's failure is logged and does not stop another.
 *
 * Every run is counted by outcome (`flexprice_sync_runs_total{status}`); a failed scheduled run
 * is also reported to Sentry. The Stripe requests each run made feed the call budget: the
 * requirements allow fewer than 100 Stripe calls an hour per tenant, so the trailing hour's
 * requests per tenant are exported (`flexprice_sync_stripe_requests_last_hour`) for the alert.
 * The budget is watched, not enforced: usage is never held back or dropped to stay under it
 * (see README "SyncStripeCallBudget").
 */
import type { SqlError } from "@effect/sql"
import { Cause, Clock, Duration, Effect, Metric, MetricLabel, Option } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { EventStore, type EventStoreError } from "../events/EventStore.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { StripeConfigRepo, type TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import { StripeNotConfigured } from "../stripe/StripeAccounts.js"
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

const HOUR_MS = 3_600_000

const countRun = (status: string) =>
  Metric.increment(Metric.taggedWithLabels(Metrics.syncRunsTotal, [MetricLabel.make("status", status)]))

/** Stripe requests per tenant with their times, pruned to the trailing hour. */
class CallBudget {
  private readonly byTenant = new Map<string, { scope: Pick<TenantScope, "tenantId" | "environmentId">; calls: Array<[number, number]> }>()

  record(scope: Pick<TenantScope, "tenantId" | "environmentId">, at: number, requests: number) {
    const key = `${scope.tenantId}/${scope.environmentId}`
    const entry = this.byTenant.get(key) ?? { scope, calls: [] }
    entry.calls.push([at, requests])
    this.byTenant.set(key, entry)
  }

  /** Requests in (now − 1 h, now] per tenant; tenants with none are dropped. */
  lastHour(now: number): Array<{ scope: Pick<TenantScope, "tenantId" | "environmentId">; requests: number }> {
    const out: Array<{ scope: Pick<TenantScope, "tenantId" | "environmentId">; requests: number }> = []
    for (const [key, entry] of this.byTenant) {
      entry.calls = entry.calls.filter(([t]) => t > now - HOUR_MS)
      if (entry.calls.length === 0) this.byTenant.delete(key)
      out.push({ scope: entry.scope, requests: entry.calls.reduce((n, [, r]) => n + r, 0) })
    }
    return out
  }
}

export class SyncService extends Effect.Service<SyncService>()("flexprice/SyncService", {
  effect: Effect.gen(function* () {
    const pipeline = yield* SyncPipeline
    const lease = yield* SyncLease
    const configs = yield* StripeConfigRepo
    const settings = yield* SyncSettings
    const reporter = yield* ErrorReporter
    const backend = MetricLabel.make("backend", (yield* EventStore).backend)
    const budget = new CallBudget()

    /** Aggregate groups each window pass returned (the aggregation query's result size). */
    const recordResultSizes = (report: RunReport) =>
      Effect.forEach(
        report.windows,
        (w) => Metric.update(Metric.taggedWithLabels(Metrics.aggregationResultGroups, [backend]), w.groups),
        { discard: true }
      )

    /** Sets the trailing-hour gauge: per tenant with tenant labels, else the busiest tenant. */
    const publishCallBudget = Effect.gen(function* () {
      const counts = budget.lastHour(yield* Clock.currentTimeMillis)
      if (yield* Metrics.tenantLabelsEnabled) {
        for (const c of counts)
          yield* Metric.set(Metric.taggedWithLabels(Metrics.syncStripeRequestsLastHour, yield* Metrics.tenantTags(c.scope)), c.requests)
      } else yield* Metric.set(Metrics.syncStripeRequestsLastHour, Math.max(0, ...counts.map((c) => c.requests)))
    })

    const recordRequests = (scope: Pick<TenantScope, "tenantId" | "environmentId">, requests: number) =>
      requests === 0
        ? publishCallBudget
        : Effect.gen(function* () {
            budget.record(scope, yield* Clock.currentTimeMillis, requests)
            yield* Metric.incrementBy(Metric.taggedWithLabels(Metrics.syncStripeRequestsTotal, yield* Metrics.tenantTags(scope)), requests)
            yield* publishCallBudget
          })

    /** One tenant under its lease (`wait`: how long to wait for a busy lease). */
    const runTenant = (
      config: TenantStripeConfig,
      options: RunOptions,
      leaseOptions: { readonly wait?: Duration.DurationInput } = {}
    ): Effect.Effect<RunReport, RunError> =>
      lease.withLease(config.scope, pipeline.run(config, options), leaseOptions).pipe(
        Effect.provideService(CurrentTenant, config.scope),
        Effect.tapBoth({
          onSuccess: (report) =>
            Effect.all([countRun(report.status), recordResultSizes(report), recordRequests(config.scope, report.stripeRequests)], {
              discard: true
            }),
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
    const runAll = (trigger: RunOptions["trigger"] = "schedule") =>
      Effect.gen(function* () {
        const all = yield* configs.listSyncEnabled
        return yield* Effect.forEach(all, (c) => outcomeOf(c, { trigger }), {
          concurrency: settings.shared.tenantConcurrency
        })
      }).pipe(Effect.withSpan("sync.run_all", { attributes: { "sync.trigger": trigger } }))

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

    return { runTenant, runAll, runCurrent, outcomeOf, publishCallBudget } as const
  })
}) {}

/**
 * The built-in schedule (inside `serve`). The requirements promise usage in Stripe within 65
 * minutes of its hour starting (hour + grace), so a fixed tick is not enough: with a 60 s tick a
 * window due at end + grace waited up to a minute more. Instead the loop sleeps until the next
 * due instant of any sync-enabled tenant (window end + that tenant's grace, from its config) and
 * starts exactly the tenants whose due instant has passed since their last run started.
 *
 * Every FLEXPRICE_SCHEDULE_INTERVAL_SECONDS (60) a backstop pass runs every tenant regardless
 * (retries of pending batches after an outage, late events, re-evaluation of unmapped customers)
 * and re-reads the configs, so a changed window size or grace is re-planned within one interval.
 * A due instant that passes while the tenant's previous run is still going starts a new run as
 * soon as that one ends. Runs are forked, bounded by FLEXPRICE_SYNC_TENANT_CONCURRENCY; across
 * replicas the per-tenant lease decides who runs (a busy lease is not an error).
 *
 * Each pass bumps `flexprice_sync_scheduler_heartbeat_timestamp_seconds` and publishes the
 * fleet-wide last-success gauge (SyncHealth), so a dead or wedged loop is alertable.
 * FLEXPRICE_SCHEDULE_ENABLED=false turns the schedule off.
 */
import { Clock, Effect, FiberSet, Layer, Metric, Queue } from "effect"
import * as Metrics from "../observability/Metrics.js"
import { StripeConfigRepo, type TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import { CallBudget } from "./CallBudget.js"
import { SyncHealth } from "./SyncHealth.js"
import { SyncService } from "./SyncService.js"
import { SyncSettings } from "./SyncSettings.js"
import * as W from "./Windows.js"

export const tenantKey = (s: { readonly tenantId: string; readonly environmentId: string }) => `${s.tenantId}/${s.environmentId}`

export interface SchedulerLoopOptions<E, R> {
  /** backstop: every tenant runs at least this often */
  readonly intervalSeconds: number
  /** tenants running at once */
  readonly concurrency: number
  readonly listConfigs: Effect.Effect<ReadonlyArray<TenantStripeConfig>, E, R>
  /** one tenant's run; its failures are its own business (logged, counted) */
  readonly runTenant: (config: TenantStripeConfig) => Effect.Effect<unknown, never, R>
  /** after each pass that listed the tenants (heartbeat, health gauges); its failures are logged */
  readonly afterPass?: ((now: number) => Effect.Effect<unknown, unknown, R>) | undefined
}

interface TenantState {
  running: boolean
  /** when this tenant's latest run started (had its concurrency permit) */
  lastStart: number
}

/**
 * The scheduler loop, forked in the caller's scope. Exposed for tests (TestClock): the decision of
 * when to run each tenant is all here; `layer` wires it to the real services.
 */
export const runSchedulerLoop = <E, R>(options: SchedulerLoopOptions<E, R>) =>
  Effect.gen(function* () {
    const intervalMs = options.intervalSeconds * 1000
    const fibers = yield* FiberSet.make()
    const permits = yield* Effect.makeSemaphore(options.concurrency)
    const wake = yield* Queue.sliding<void>(1)
    const tenants = new Map<string, TenantState>()
    let nextBackstop = yield* Clock.currentTimeMillis

    const start = (config: TenantStripeConfig, state: TenantState) =>
      Effect.gen(function* () {
        state.running = true
        const minutes = config.aggregationWindowMinutes
        const grace = config.gracePeriodMinutes
        const run = Effect.gen(function* () {
          const startedAt = yield* Clock.currentTimeMillis
          const due = W.lastDueAtOrBefore(startedAt, minutes, grace)
          // a due instant this run serves for the first time: how long after it did we start?
          if (due > state.lastStart) yield* Metric.update(Metrics.syncScheduleDelaySeconds, (startedAt - due) / 1000)
          state.lastStart = startedAt
          yield* options.runTenant(config)
        })
        yield* FiberSet.run(
          fibers,
          permits.withPermits(1)(run).pipe(
            Effect.ensuring(
              Effect.gen(function* () {
                state.running = false
                const now = yield* Clock.currentTimeMillis
                // a due instant passed while this run was going: run again now, not at the backstop
                if (W.lastDueAtOrBefore(now, minutes, grace) > state.lastStart) yield* Queue.offer(wake, undefined)
              })
            )
          )
        )
      })

    /** One pass: start what is owed; answers when the next pass is needed. */
    const pass = Effect.fn("SyncScheduler.pass")(function* () {
      const now = yield* Clock.currentTimeMillis
      const backstop = now >= nextBackstop
      if (backstop) nextBackstop = now + intervalMs
      let next = nextBackstop
      const all = yield* options.listConfigs
      let started = 0
      for (const config of all) {
        const key = tenantKey(config.scope)
        let state = tenants.get(key)
        if (state === undefined) {
          state = { running: false, lastStart: Number.NEGATIVE_INFINITY }
          tenants.set(key, state)
        }
        const minutes = config.aggregationWindowMinutes
        const grace = config.gracePeriodMinutes
        const owed = W.lastDueAtOrBefore(now, minutes, grace) > state.lastStart
        if (!state.running && (backstop || owed)) {
          yield* start(config, state)
          started++
        }
        next = Math.min(next, W.nextDueAfter(now, minutes, grace))
      }
      yield* Effect.annotateCurrentSpan({ "sync.tenants": all.length, "sync.started": started, "sync.backstop": backstop })
      return next
    })

    const loop = Effect.gen(function* () {
      for (;;) {
        const next = yield* pass().pipe(
          Effect.map((at) => ({ at, ok: true })),
          Effect.catchAllCause((cause) =>
            Effect.logError("sync tick failed", cause).pipe(Effect.as({ at: nextBackstop, ok: false }))
          )
        )
        const now = yield* Clock.currentTimeMillis
        // only a pass that could list the tenants counts as alive: a loop failing every pass is dead
        if (next.ok && options.afterPass)
          yield* options.afterPass(now).pipe(Effect.catchAllCause((cause) => Effect.logWarning("sync health update failed", cause)))
        const wait = Math.max(0, next.at - now)
        if (wait > 0) yield* Effect.raceFirst(Effect.sleep(wait), Queue.take(wake))
      }
    })
    return yield* Effect.forkScoped(loop)
  })

export class SyncScheduler {
  /** Add to `serve`: `Layer.merge(HttpServerLive, SyncScheduler.layer)`, provided with AppLive. */
  static readonly layer = Layer.scopedDiscard(
    Effect.gen(function* () {
      const settings = yield* SyncSettings
      if (!settings.shared.scheduleEnabled) {
        yield* Effect.logInfo("sync schedule disabled (FLEXPRICE_SCHEDULE_ENABLED=false)")
        return
      }
      const service = yield* SyncService
      const configs = yield* StripeConfigRepo
      const health = yield* SyncHealth
      const budget = yield* CallBudget
      yield* Effect.logInfo(
        `sync schedule at each window's due instant, every tenant at least every ${settings.shared.scheduleIntervalSeconds} s`
      )
      yield* runSchedulerLoop({
        intervalSeconds: settings.shared.scheduleIntervalSeconds,
        concurrency: settings.shared.tenantConcurrency,
        listConfigs: configs.listSyncEnabled,
        runTenant: (config) => service.outcomeOf(config, { trigger: "schedule" }),
        afterPass: (now) =>
          Effect.zipRight(
            Metric.set(Metrics.syncSchedulerHeartbeatTimestampSeconds, now / 1000),
            Effect.zipRight(health.publish, budget.publish)
          )
      })
    })
  )
}

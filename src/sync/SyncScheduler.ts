/**
 * The built-in schedule (inside `serve`): every FLEXPRICE_SCHEDULE_INTERVAL_SECONDS (60) a tick
 * lists the sync-enabled tenants and starts a run for each tenant that is not already running in
 * this process. Runs are forked, bounded by FLEXPRICE_SYNC_TENANT_CONCURRENCY, so a slow tenant
 * delays neither the next tick nor other tenants. Across replicas the per-tenant lease decides
 * who runs (a busy lease is not an error). FLEXPRICE_SCHEDULE_ENABLED=false turns it off.
 */
import { Effect, FiberSet, Layer, Schedule } from "effect"
import { StripeConfigRepo } from "../repositories/StripeConfigRepo.js"
import { SyncService } from "./SyncService.js"
import { SyncSettings } from "./SyncSettings.js"

export const tenantKey = (s: { readonly tenantId: string; readonly environmentId: string }) => `${s.tenantId}/${s.environmentId}`

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
      const fibers = yield* FiberSet.make()
      const running = new Set<string>()
      const permits = yield* Effect.makeSemaphore(settings.shared.tenantConcurrency)

      const tick = Effect.gen(function* () {
        const all = yield* configs.listSyncEnabled
        let started = 0
        for (const config of all) {
          const key = tenantKey(config.scope)
          if (running.has(key)) continue
          running.add(key)
          started++
          yield* FiberSet.run(
            fibers,
            permits
              .withPermits(1)(service.outcomeOf(config, { trigger: "schedule" }))
              .pipe(Effect.ensuring(Effect.sync(() => running.delete(key))))
          )
        }
        yield* Effect.annotateCurrentSpan({ "sync.tenants": all.length, "sync.started": started })
      }).pipe(
        Effect.catchAllCause((cause) => Effect.logError("sync tick failed", cause)),
        Effect.withSpan("sync.tick")
      )

      yield* Effect.logInfo(`sync schedule every ${settings.shared.scheduleIntervalSeconds} s`)
      yield* Effect.forkScoped(
        Effect.repeat(tick, Schedule.spaced(`${settings.shared.scheduleIntervalSeconds} seconds`))
      )
    })
  )
}

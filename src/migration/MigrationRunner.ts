/**
 * Runs Stripe customer migrations in the background for as long as the server lives: a job
 * submitted over HTTP is forked into the runner's FiberSet; at start-up, and every
 * `FLEXPRICE_MIGRATION_SCAN_SECONDS`, jobs left `running` by a stopped process (released on a
 * graceful stop, or not heartbeating for `FLEXPRICE_MIGRATION_STALE_SECONDS`) are claimed and
 * resumed from their saved cursor. Closing the runner interrupts its jobs, which release their
 * claim, so the next start resumes them at once.
 */
import { Config, Effect, Fiber, FiberSet, Option, Schedule } from "effect"
import { randomToken, TenantScope, type EnvironmentId, type TenantId } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import type { MigrationJob, MigrationOptions } from "./Model.js"
import { MigrationService, type PageListener } from "./MigrationService.js"

export const MigrationRunnerConfig = Config.all({
  staleSeconds: Config.integer("FLEXPRICE_MIGRATION_STALE_SECONDS").pipe(
    Config.withDefault(60),
    Config.validate({ message: "expected an integer ≥ 15 (jobs heartbeat every 10 s)", validation: (n) => n >= 15 })
  ),
  scanSeconds: Config.integer("FLEXPRICE_MIGRATION_SCAN_SECONDS").pipe(
    Config.withDefault(30),
    Config.validate({ message: "expected an integer ≥ 1", validation: (n) => n >= 1 })
  )
})

export const scopeOfJob = (job: Pick<MigrationJob, "tenantId" | "environmentId">) =>
  new TenantScope({ tenantId: job.tenantId as TenantId, environmentId: job.environmentId as EnvironmentId })

export class MigrationRunner extends Effect.Service<MigrationRunner>()("flexprice/MigrationRunner", {
  scoped: Effect.gen(function* () {
    const service = yield* MigrationService
    const repo = yield* MigrationJobRepo
    const config = yield* MigrationRunnerConfig
    const owner = `runner_${randomToken(12)}`
    const fibers = yield* FiberSet.make<void, never>()
    const running = new Map<string, Fiber.RuntimeFiber<void, never>>()

    const launch = (job: MigrationJob, onPage?: PageListener) =>
      Effect.gen(function* () {
        const fiber = yield* FiberSet.run(
          fibers,
          service.run(job, owner, onPage).pipe(
            Effect.provideService(CurrentTenant, scopeOfJob(job)),
            Effect.ensuring(Effect.sync(() => running.delete(job.id)))
          )
        )
        running.set(job.id, fiber)
        return fiber
      })

    /** Create the job (MigrationAlreadyRunning when one runs in this tenant environment) and start it. */
    const submit = (options: MigrationOptions, onPage?: PageListener) =>
      Effect.gen(function* () {
        const job = yield* service.start(options, owner)
        yield* launch(job, onPage)
        return job
      })

    /** Claim and resume orphaned jobs (start-up, then periodically: another replica may have died). */
    const scan = Effect.gen(function* () {
      const claimed = yield* repo.claimOrphans(owner, config.staleSeconds)
      for (const job of claimed) {
        yield* Effect.logInfo("resuming migration").pipe(
          Effect.annotateLogs({ migration_id: job.id, pages_done: job.pages, cursor: job.cursor ?? "" })
        )
        yield* launch(job)
      }
      return claimed.length
    }).pipe(Effect.withSpan("migration.resume_scan"))

    yield* FiberSet.run(
      fibers,
      scan.pipe(
        Effect.catchAllCause((cause) => Effect.logWarning("migration resume scan failed", cause)),
        Effect.repeat(Schedule.spaced(`${config.scanSeconds} seconds`)),
        Effect.asVoid
      )
    )

    /** Wait for a job this runner is running (tests, CLI); immediate when it is not running here. */
    const await_ = (id: string) => Effect.suspend(() => Option.match(Option.fromNullable(running.get(id)), { onNone: () => Effect.void, onSome: Fiber.await })).pipe(Effect.asVoid)

    /** Stop a job here as a shutdown would (it stays `running`, released, and is resumed by the next scan). */
    const interrupt = (id: string) => Effect.suspend(() => Option.match(Option.fromNullable(running.get(id)), { onNone: () => Effect.void, onSome: Fiber.interrupt })).pipe(Effect.asVoid)

    return { submit, scan, await: await_, interrupt, owner, runningIds: Effect.sync(() => [...running.keys()]) } as const
  })
}) {}

/**
 * Runs migration work in the background for as long as the server lives: Stripe customer
 * migrations, CSV imports, rollbacks and verifications are forked into the runner's FiberSet. At
 * start-up, and every `FLEXPRICE_MIGRATION_SCAN_SECONDS`, work left `running` by a stopped process
 * (released on a graceful stop, or not heartbeating for `FLEXPRICE_MIGRATION_STALE_SECONDS`) is
 * claimed: migrations resume from their saved cursor, rollbacks and verifications from their last
 * chunk, and CSV imports (whose file died with the process) are undone and marked failed. Closing
 * the runner interrupts its work, which releases its claim, so the next start picks it up at once.
 */
import { Effect, Fiber, FiberSet, Option, Schedule } from "effect"
import { randomToken, TenantScope, type EnvironmentId, type TenantId } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { MigrationTaskRepo } from "../repositories/MigrationTaskRepo.js"
import { MigrationRunnerConfig } from "./Config.js"
import { CsvImport, type CsvImportOptions } from "./CsvImport.js"
import type { MigrationJob, MigrationOptions, MigrationTask } from "./Model.js"
import { MigrationService, type PageListener } from "./MigrationService.js"
import { Rollback } from "./Rollback.js"
import { Verify } from "./Verify.js"

export { MigrationRunnerConfig } from "./Config.js"

export const scopeOfJob = (job: Pick<MigrationJob, "tenantId" | "environmentId">) =>
  new TenantScope({ tenantId: job.tenantId as TenantId, environmentId: job.environmentId as EnvironmentId })

export class MigrationRunner extends Effect.Service<MigrationRunner>()("flexprice/MigrationRunner", {
  scoped: Effect.gen(function* () {
    const service = yield* MigrationService
    const csv = yield* CsvImport
    const rollback = yield* Rollback
    const verify = yield* Verify
    const repo = yield* MigrationJobRepo
    const tasks = yield* MigrationTaskRepo
    const config = yield* MigrationRunnerConfig
    const owner = `runner_${randomToken(12)}`
    const fibers = yield* FiberSet.make<void, never>()
    const running = new Map<string, Fiber.RuntimeFiber<void, never>>()

    /** Run `work` for job or task `id` in its tenant scope, tracked until it ends. */
    const launch = (id: string, scope: Pick<MigrationJob, "tenantId" | "environmentId">, work: Effect.Effect<unknown, never, CurrentTenant>) =>
      Effect.gen(function* () {
        const fiber = yield* FiberSet.run(
          fibers,
          work.pipe(
            Effect.asVoid,
            Effect.provideService(CurrentTenant, scopeOfJob(scope)),
            Effect.ensuring(Effect.sync(() => running.delete(id)))
          )
        )
        running.set(id, fiber)
        return fiber
      })

    const launchJob = (job: MigrationJob, onPage?: PageListener) => launch(job.id, job, service.run(job, owner, onPage))
    const launchTask = (task: MigrationTask) => launch(task.id, task, task.kind === "rollback" ? rollback.run(task, owner) : verify.run(task, owner))

    /** Create the job (MigrationAlreadyRunning when one runs in this tenant environment) and start it. */
    const submit = (options: MigrationOptions, onPage?: PageListener) =>
      Effect.gen(function* () {
        const job = yield* service.start(options, owner)
        yield* launchJob(job, onPage)
        return job
      })

    /** Check the CSV's header, create its job and import it in the background. */
    const submitCsv = (text: string, options: CsvImportOptions) =>
      Effect.gen(function* () {
        const job = yield* csv.start(text, options, owner)
        yield* launch(job.id, job, csv.run(job, text, options, owner))
        return job
      })

    const submitRollback = (migrationId: string) =>
      Effect.flatMap(rollback.start(migrationId, owner), (task) => Effect.as(launchTask(task), task))

    const submitVerify = (migrationId: string) => Effect.flatMap(verify.start(migrationId, owner), (task) => Effect.as(launchTask(task), task))

    /** Claim orphaned work (start-up, then periodically: another replica may have died). */
    const scan = Effect.fn("MigrationRunner.resumeScan")(function* () {
      const claimed = yield* repo.claimOrphans(owner, config.staleSeconds)
      for (const job of claimed) {
        yield* Effect.logInfo(job.kind === "csv" ? "undoing an interrupted CSV import" : "resuming migration").pipe(
          Effect.annotateLogs({ migration_id: job.id, pages_done: job.pages, cursor: job.cursor ?? "" })
        )
        yield* launch(job.id, job, job.kind === "csv" ? csv.recover(job, owner) : service.run(job, owner))
      }
      const orphanTasks = yield* tasks.claimOrphans(owner, config.staleSeconds)
      for (const task of orphanTasks) {
        yield* Effect.logInfo("resuming migration task").pipe(Effect.annotateLogs({ task_id: task.id, kind: task.kind, migration_id: task.migrationId }))
        yield* launchTask(task)
      }
      return claimed.length + orphanTasks.length
    })

    yield* FiberSet.run(
      fibers,
      scan().pipe(
        Effect.catchAllCause((cause) => Effect.logWarning("migration resume scan failed", cause)),
        Effect.repeat(Schedule.spaced(`${config.scanSeconds} seconds`)),
        Effect.asVoid
      )
    )

    /** Wait for a job or task this runner is running (tests, CLI); immediate when it is not running here. */
    const await_ = (id: string) => Effect.suspend(() => Option.match(Option.fromNullable(running.get(id)), { onNone: () => Effect.void, onSome: Fiber.await })).pipe(Effect.asVoid)

    /** Stop work here as a shutdown would (it stays `running`, released, and is picked up by the next scan). */
    const interrupt = (id: string) => Effect.suspend(() => Option.match(Option.fromNullable(running.get(id)), { onNone: () => Effect.void, onSome: Fiber.interrupt })).pipe(Effect.asVoid)

    return { submit, submitCsv, submitRollback, submitVerify, scan, await: await_, interrupt, owner, runningIds: Effect.sync(() => [...running.keys()]) } as const
  })
}) {}

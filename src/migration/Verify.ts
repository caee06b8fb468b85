/**
 * Verification of a migration's mappings against Stripe as a background task: the mappings it
 * wrote are read a chunk at a time and each Stripe customer is retrieved (8 at a time; the Stripe
 * client applies the account's rate limit), and the task saves what it found after every chunk.
 * A verification taken over after a crash continues after the last saved chunk.
 */
import { Cause, Effect, Exit, Option, Schedule } from "effect"
import { Conflict, NotFound } from "../domain/Errors.js"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { type MigrationMappingView, MigrationTaskRepo } from "../repositories/MigrationTaskRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { heartbeatInterval, MigrationRunnerConfig } from "./Config.js"
import { MAX_PROBLEMS, type MigrationTask, type VerifyMismatchJson, type VerifyProgress } from "./Model.js"
import { CHUNK_RETRY, describeError, isInfraError, LostClaim } from "./Shared.js"

const fresh: VerifyProgress = { checked: 0, ok: 0, mismatches: [], mismatches_total: 0 }

export class Verify extends Effect.Service<Verify>()("flexprice/MigrationVerify", {
  effect: Effect.gen(function* () {
    const jobs = yield* MigrationJobRepo
    const tasks = yield* MigrationTaskRepo
    const accounts = yield* StripeAccounts
    const stripe = yield* StripeClient
    const config = yield* MigrationRunnerConfig

    /** One mapping against its Stripe customer: undefined when it matches. */
    const check = (ref: Effect.Effect.Success<ReturnType<typeof accounts.refForOperation>>, m: MigrationMappingView) =>
      Effect.gen(function* () {
        const base = { mapping_id: m.mappingId, customer_id: m.customerId || null, external_id: m.externalId, stripe_customer_id: m.providerCustomerId }
        const mismatch = (problem: string, detail: string): VerifyMismatchJson => ({ ...base, problem, detail })
        if (!m.stillOurs || m.providerCustomerId === null) return mismatch("mapping_removed", "the mapping was removed or rewritten since the migration")
        const found = yield* Effect.either(stripe.retrieveCustomer(ref, m.providerCustomerId))
        if (found._tag === "Left") {
          const e = found.left
          if (e._tag === "StripeInvalidRequest" && e.status === 404) return mismatch("stripe_customer_not_found", "Stripe has no such customer")
          return mismatch("stripe_check_failed", describeError(e))
        }
        const c = found.right
        if (c.deleted) return mismatch("stripe_customer_deleted", "the Stripe customer was deleted")
        const ext = c.metadata["external_id"]
        if (ext === undefined || ext.trim() === "") return mismatch("external_id_missing", "the Stripe customer has no metadata.external_id")
        if (ext.trim() !== m.externalId) return mismatch("external_id_mismatch", `Stripe metadata.external_id is ${ext.trim()}`)
        return undefined
      })

    /** A verification task of a finished migration (409 when one is running for it). */
    const start = Effect.fn("Verify.start")(function* (id: string, owner: string) {
      yield* Effect.annotateCurrentSpan({ "migration.id": id })
      const job = yield* Effect.flatMap(jobs.get(id), Option.match({ onNone: () => Effect.fail(NotFound.of("migration", id)), onSome: Effect.succeed }))
      // Fail fast on a missing or unreadable key rather than starting a task that fails at once.
      yield* accounts.refForOperation("stripe_migration_verify")
      const counts = yield* tasks.countEntities(job.id)
      return yield* tasks
        .create({ migrationId: job.id, kind: "verify", total: counts.mappings, claimedBy: owner })
        .pipe(
          Effect.catchTag("TaskAlreadyRunning", (e) =>
            Conflict.of("verify_running", `a verification of migration ${id} is running (task ${e.runningId})`, { task_id: e.runningId })
          )
        )
    })

    const run = Effect.fn("Verify.run")(
      function* (task: MigrationTask, owner: string) {
        yield* Effect.annotateCurrentSpan({ "migration.id": task.migrationId, "task.id": task.id })
        yield* tasks.heartbeat(task.id, owner).pipe(Effect.ignore, Effect.repeat(Schedule.spaced(heartbeatInterval(config.staleSeconds))), Effect.forkScoped)
        let cursor = task.cursor ?? ""
        let done = task.done
        let found: VerifyProgress = { ...fresh, ...(task.result as Partial<VerifyProgress>) }
        const outcome = yield* Effect.exit(
          Effect.gen(function* () {
            const ref = yield* accounts.refForOperation("stripe_migration_verify")
            for (;;) {
              const page = yield* tasks.mappingsPage(task.migrationId, cursor, config.chunkRows).pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
              if (page.length === 0) break
              const results = yield* Effect.forEach(page, (m) => check(ref, m), { concurrency: 8 })
              const mismatches = [...found.mismatches]
              let total = found.mismatches_total
              for (const r of results)
                if (r !== undefined) {
                  total++
                  if (mismatches.length < MAX_PROBLEMS) mismatches.push(r)
                }
              found = { checked: found.checked + page.length, ok: found.ok + results.filter((r) => r === undefined).length, mismatches, mismatches_total: total }
              cursor = page[page.length - 1]!.mappingId
              done += page.length
              const owned = yield* tasks.saveProgress(task.id, owner, { cursor, done, result: found }).pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
              if (!owned) return yield* Effect.fail(new LostClaim())
            }
          })
        )
        if (Exit.isSuccess(outcome)) {
          yield* tasks.finish(task.id, owner, "completed", null, { cursor, done, result: found })
          return
        }
        if (Cause.isInterruptedOnly(outcome.cause)) return yield* Effect.interrupt
        const failure = Cause.failureOption(outcome.cause)
        if (Option.isSome(failure) && failure.value instanceof LostClaim) return
        yield* Effect.logError("migration verification failed", outcome.cause).pipe(Effect.annotateLogs({ migration_id: task.migrationId, task_id: task.id }))
        yield* tasks.finish(task.id, owner, "failed", Option.match(failure, { onSome: describeError, onNone: () => "internal error" }), { cursor, done, result: found })
      },
      (self, task, owner) =>
        self.pipe(
          Effect.scoped,
          Effect.onInterrupt(() => tasks.release(task.id, owner).pipe(Effect.ignore)),
          Effect.catchAll((e) => Effect.logError("migration verification bookkeeping failed", e).pipe(Effect.annotateLogs({ task_id: task.id })))
        )
    )

    return { start, run } as const
  })
}) {}

/**
 * Rollback of a migration (SPEC §9) as a background task in chunks: remove the mappings it
 * created, put back the rows it replaced, remove the customers it created unless they have events
 * or something else mapped them since. Each chunk is one short transaction that also saves the
 * task's cursor and counts (conditional on still owning the task), so other tenants' requests
 * reach the database between chunks and a task resumed after a crash continues exactly after the
 * last committed chunk. The migration turns `rolled_back` in the transaction of the last step.
 *
 * The same steps undo a CSV import that cannot finish (CsvImport.ts), without a task row.
 */
import { PgClient } from "@effect/sql-pg"
import { Cause, Clock, Duration, Effect, Exit, Option, Schedule } from "effect"
import { Conflict, NotFound } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { EventStore } from "../events/EventStore.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { MigrationTaskRepo } from "../repositories/MigrationTaskRepo.js"
import { firstChunkSize, heartbeatInterval, MigrationRunnerConfig, nextChunkSize } from "./Config.js"
import { JobGate } from "./JobGate.js"
import type { MigrationTask, RollbackProgress, RollbackReport } from "./Model.js"
import { CHUNK_RETRY, describeError, isInfraError, LostClaim } from "./Shared.js"

type Phase = "mappings" | "restore" | "customers" | "done"
const PHASES: ReadonlyArray<Phase> = ["mappings", "restore", "customers", "done"]

/** At most this many kept customers are listed (all are counted). */
const MAX_KEPT_LISTED = 1000

export interface UndoState {
  readonly phase: Phase
  /** Last id handled in the phase ("" before the first). */
  readonly after: string
  readonly done: number
  readonly progress: RollbackProgress
}

export const freshUndo: UndoState = {
  phase: "mappings",
  after: "",
  done: 0,
  progress: { mappings_removed: 0, mappings_restored: 0, customers_removed: 0, customers_kept: [], customers_kept_total: 0 }
}

const encodeCursor = (s: UndoState) => `${s.phase}:${s.after}`
const stateOfTask = (t: MigrationTask): UndoState => {
  if (t.cursor === null) return freshUndo
  const i = t.cursor.indexOf(":")
  const phase = t.cursor.slice(0, i) as Phase
  return { phase: PHASES.includes(phase) ? phase : "mappings", after: t.cursor.slice(i + 1), done: t.done, progress: { ...freshUndo.progress, ...(t.result as Partial<RollbackProgress>) } }
}
const taskProgress = (s: UndoState) => ({ cursor: encodeCursor(s), done: s.done, result: s.progress })

export class Rollback extends Effect.Service<Rollback>()("flexprice/MigrationRollback", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const jobs = yield* MigrationJobRepo
    const tasks = yield* MigrationTaskRepo
    const store = yield* EventStore
    const watermark = yield* IngestWatermark
    const gate = yield* JobGate
    const config = yield* MigrationRunnerConfig

    /**
     * One step of undoing migration `id`: at most `n` entities, or a phase change. A constant
     * number of statements whatever `n` (the customers' event check is one pass for the chunk).
     */
    const step = (id: string, s: UndoState, n: number) =>
      Effect.gen(function* () {
        const scope = yield* CurrentTenant
        const p = { ...s.progress, customers_kept: [...s.progress.customers_kept] }
        const nextPhase = (): UndoState => ({ phase: PHASES[PHASES.indexOf(s.phase) + 1] ?? "done", after: "", done: s.done, progress: p })
        switch (s.phase) {
          case "mappings": {
            const ids = yield* tasks.entitiesPage(id, "mapping", s.after, n)
            if (ids.length === 0) return nextPhase()
            p.mappings_removed += yield* jobs.deleteMappings(id, ids)
            return { phase: s.phase, after: ids[ids.length - 1]!, done: s.done + ids.length, progress: p }
          }
          case "restore": {
            const rows = yield* tasks.replacedPage(id, s.after, n)
            if (rows.length === 0) return nextPhase()
            p.mappings_restored += yield* jobs.restoreMappings(rows.map((r) => r.snapshot))
            return { phase: s.phase, after: rows[rows.length - 1]!.mappingId, done: s.done + rows.length, progress: p }
          }
          case "customers": {
            const ids = yield* tasks.entitiesPage(id, "customer", s.after, n)
            if (ids.length === 0) return nextPhase()
            const mapped = yield* jobs.customersMappedElsewhere(id, ids)
            const existing = yield* tasks.customersByIds(ids)
            const withEvents = yield* store.customersWithEvents(
              scope,
              existing.filter((c) => !mapped.has(c.id)).map((c) => c.externalId)
            )
            const keep = (k: RollbackReport["customers_kept"][number]) => {
              p.customers_kept_total = (p.customers_kept_total ?? 0) + 1
              if (p.customers_kept.length < MAX_KEPT_LISTED) p.customers_kept.push(k)
            }
            const removable: Array<string> = []
            for (const { id: customerId, externalId } of existing) {
              if (mapped.has(customerId)) keep({ customer_id: customerId, external_id: externalId, reason: "mapped_since" })
              else if (withEvents.has(externalId)) keep({ customer_id: customerId, external_id: externalId, reason: "has_events" })
              else removable.push(customerId)
            }
            p.customers_removed += yield* tasks.removeCustomers(removable)
            return { phase: s.phase, after: ids[ids.length - 1]!, done: s.done + ids.length, progress: p }
          }
          case "done":
            return s
        }
      })

    /**
     * Run steps until done, each in its turn and its own transaction with `save` (which answers
     * false when the work is no longer ours: the transaction then rolls back and LostClaim fails).
     * Steps are sized by how long the last one took (nextChunkSize).
     */
    const undoAll = <E, R>(id: string, from: UndoState, save: (s: UndoState) => Effect.Effect<boolean, E, R>) =>
      Effect.gen(function* () {
        let s = from
        let size = firstChunkSize(config)
        while (s.phase !== "done") {
          const current = s
          const n = size
          const [took, next] = yield* gate
            .timedTurn(
              watermark.stamped(() =>
                sql.withTransaction(
                  Effect.gen(function* () {
                    const next = yield* step(id, current, n)
                    if (!(yield* save(next))) return yield* Effect.fail(new LostClaim())
                    return next
                  })
                )
              )
            )
            .pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
          s = next
          size = nextChunkSize(config, n, Duration.toMillis(took))
        }
        return s
      })

    /** Checks, then a rollback task (409 when one runs); a failed earlier rollback is continued. */
    const start = Effect.fn("Rollback.start")(function* (id: string, owner: string) {
      yield* Effect.annotateCurrentSpan({ "migration.id": id })
      const job = yield* Effect.flatMap(jobs.get(id), Option.match({ onNone: () => Effect.fail(NotFound.of("migration", id)), onSome: Effect.succeed }))
      if (job.status === "running") return yield* Conflict.of("migration_running", `migration ${id} is still running`, { running_id: id })
      if (job.status === "rolled_back") return yield* Conflict.of("already_rolled_back", `migration ${id} was already rolled back`, { migration_id: id })
      const counts = yield* tasks.countEntities(id)
      const previous = yield* tasks.latest(id, "rollback")
      const task = yield* tasks
        .create({ migrationId: id, kind: "rollback", total: counts.mappings + counts.replaced + counts.customers, claimedBy: owner })
        .pipe(
          Effect.catchTag("TaskAlreadyRunning", (e) =>
            Conflict.of("rollback_running", `a rollback of migration ${id} is running (task ${e.runningId})`, { task_id: e.runningId })
          )
        )
      if (Option.isSome(previous) && previous.value.status === "failed") {
        const carried = { cursor: previous.value.cursor, done: previous.value.done, result: previous.value.result }
        yield* tasks.saveProgress(task.id, owner, carried)
        return { ...task, ...carried }
      }
      return task
    })

    /** Run a claimed rollback task to its end (in the task's tenant scope). */
    const run = Effect.fn("Rollback.run")(
      function* (task: MigrationTask, owner: string) {
        yield* Effect.annotateCurrentSpan({ "migration.id": task.migrationId, "task.id": task.id })
        yield* tasks.heartbeat(task.id, owner).pipe(Effect.ignore, Effect.repeat(Schedule.spaced(heartbeatInterval(config.staleSeconds))), Effect.forkScoped)
        const outcome = yield* Effect.exit(
          Effect.gen(function* () {
            const end = yield* undoAll(task.migrationId, stateOfTask(task), (s) => tasks.saveProgress(task.id, owner, taskProgress(s)))
            const report: RollbackReport = { rolled_back_at: new Date(yield* Clock.currentTimeMillis).toISOString(), ...end.progress }
            return yield* gate.turn(
              sql.withTransaction(
                Effect.gen(function* () {
                  const marked = yield* jobs.markRolledBack(task.migrationId, report)
                  const error = marked ? null : `migration ${task.migrationId} changed while rolling back; retry`
                  if (!(yield* tasks.finish(task.id, owner, marked ? "completed" : "failed", error, taskProgress(end)))) return yield* Effect.fail(new LostClaim())
                  return report
                })
              )
            )
          })
        )
        if (Exit.isSuccess(outcome)) {
          yield* Effect.logInfo("migration rolled back").pipe(
            Effect.annotateLogs({ migration_id: task.migrationId, mappings_removed: outcome.value.mappings_removed, customers_removed: outcome.value.customers_removed })
          )
          return
        }
        if (Cause.isInterruptedOnly(outcome.cause)) return yield* Effect.interrupt
        const failure = Cause.failureOption(outcome.cause)
        if (Option.isSome(failure) && failure.value instanceof LostClaim) return
        yield* Effect.logError("migration rollback failed", outcome.cause).pipe(Effect.annotateLogs({ migration_id: task.migrationId, task_id: task.id }))
        // The chunks committed so far stay (and are reported); a new rollback continues from them.
        const latest = yield* tasks.get(task.id)
        yield* tasks.finish(task.id, owner, "failed", Option.match(failure, { onSome: describeError, onNone: () => "internal error" }), {
          cursor: Option.match(latest, { onSome: (t) => t.cursor, onNone: () => null }),
          done: Option.match(latest, { onSome: (t) => t.done, onNone: () => 0 }),
          result: Option.match(latest, { onSome: (t) => t.result, onNone: () => ({}) })
        })
      },
      (self, task, owner) =>
        self.pipe(
          Effect.scoped,
          Effect.onInterrupt(() => tasks.release(task.id, owner).pipe(Effect.ignore)),
          Effect.catchAll((e) => Effect.logError("migration rollback bookkeeping failed", e).pipe(Effect.annotateLogs({ task_id: task.id })))
        )
    )

    return { start, run, undoAll } as const
  })
}) {}

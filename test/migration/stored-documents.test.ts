/**
 * The JSON documents a migration stores (a job's problems, rollback report and CSV summary, a
 * task's result) are decoded field by field when read back: what was written reads back equal,
 * and a stored document of the wrong shape fails the read as a defect (like any row that does not
 * decode), rather than reaching the API as whatever the column held.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { expect } from "vitest"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { defaultOptions, type CsvImportSummary, type MigrationProblem, type RollbackReport, type TaskResult, zeroCounts } from "../../src/migration/Model.js"
import { MigrationJobRepo } from "../../src/repositories/MigrationJobRepo.js"
import { MigrationTaskRepo } from "../../src/repositories/MigrationTaskRepo.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { TestTenant } from "../support/TestApp.js"

const OWNER = "stored-documents-test"

/** Every optional field present in one problem and absent in the other. */
const problems: ReadonlyArray<MigrationProblem> = [
  {
    stripe_customer_id: "cus_A1",
    external_id: "ext-1",
    code: "conflict",
    message: "line 2: external_id ext-1 is mapped to another Stripe customer",
    conflict_with: { customer_id: "cust_1", stripe_customer_id: "cus_B1" },
    line: 2
  },
  { stripe_customer_id: "cus_A2", code: "missing_external_id", message: "the Stripe customer has no metadata.external_id" }
]
const summary: CsvImportSummary = { valid_rows: 7, applied: true, overwritten: 1, warnings_total: 2 }
const report: RollbackReport = {
  rolled_back_at: "2026-12-03T14:00:00.000Z",
  mappings_removed: 6,
  mappings_restored: 1,
  customers_removed: 4,
  customers_kept: [{ customer_id: "cust_1", external_id: "ext-1", reason: "has_events" }],
  customers_kept_total: 1
}
const verifyResult: TaskResult = {
  checked: 3,
  ok: 2,
  mismatches: [{ mapping_id: "map_1", customer_id: null, external_id: null, stripe_customer_id: "cus_A1", problem: "mapping_missing", detail: "gone" }],
  mismatches_total: 1
}

/** A finished CSV job holding `problems` and `summary`, rolled back with `report`: its id. */
const finishedJob = Effect.gen(function* () {
  const jobs = yield* MigrationJobRepo
  const job = yield* jobs.create({ kind: "csv", options: defaultOptions, claimedBy: OWNER })
  const progress = { cursor: null, pages: 0, counts: { ...zeroCounts, seen: 9 }, problems, problemsTotal: problems.length }
  expect(yield* jobs.finishCsv(job.id, OWNER, { status: "completed", error: null, progress, rowsDone: 9, rowsTotal: 9, summary })).toBe(true)
  expect(yield* jobs.markRolledBack(job.id, report)).toBe(true)
  return job.id
})

const inTenant = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(TestTenant, ({ scope }) => Effect.provideService(effect, CurrentTenant, scope))

const isDefect = <A, E>(exit: Exit.Exit<A, E>) => Exit.isFailure(exit) && Cause.isDie(exit.cause)

/** Stored documents of the wrong shape, each in the column it would be read from. */
const malformedJobs: ReadonlyArray<readonly [string, "problems" | "rollback" | "result", string]> = [
  ["a problem with an unknown code", "problems", `[{"stripe_customer_id":"cus_A1","code":"no_such_code","message":"m"}]`],
  ["a problem without its message", "problems", `[{"stripe_customer_id":"cus_A1","code":"failed"}]`],
  ["problems that are not a list", "problems", `{"stripe_customer_id":"cus_A1"}`],
  ["a rollback report with a count as text", "rollback", `{"rolled_back_at":"2026-12-03T14:00:00.000Z","mappings_removed":"6","mappings_restored":1,"customers_removed":4,"customers_kept":[]}`],
  ["a kept customer with an unknown reason", "rollback", `{"rolled_back_at":"x","mappings_removed":0,"mappings_restored":0,"customers_removed":0,"customers_kept":[{"customer_id":"c","external_id":"e","reason":"liked"}]}`],
  ["a CSV summary without applied", "result", `{"valid_rows":7,"overwritten":1,"warnings_total":2}`]
]

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(TestApp.layer({ backend }), { excludeTestServices: true })(`stored migration documents on ${backend}`, (it) => {
    it.effect("a job's problems, CSV summary and rollback report read back as written", () =>
      inTenant(
        Effect.gen(function* () {
          const id = yield* finishedJob
          const job = yield* (yield* MigrationJobRepo).get(id).pipe(Effect.flatten)
          expect({ problems: job.problems, csv: job.csv, rollback: job.rollback }).toStrictEqual({ problems, csv: summary, rollback: report })
        })
      )
    )

    for (const [name, column, stored] of malformedJobs)
      it.effect(`${name} fails the job's reads as a defect`, () =>
        inTenant(
          Effect.gen(function* () {
            const id = yield* finishedJob
            const sql = yield* PgClient.PgClient
            yield* sql`UPDATE migration_jobs SET ${sql(column)} = ${stored}::jsonb WHERE id = ${id}`
            const jobs = yield* MigrationJobRepo
            expect(isDefect(yield* Effect.exit(jobs.get(id)))).toBe(true)
            expect(isDefect(yield* Effect.exit(jobs.list({ limit: 10 })))).toBe(true)
          })
        )
      )

    it.effect("a task's result reads back as written; a result of the wrong shape fails the read", () =>
      inTenant(
        Effect.gen(function* () {
          const migrationId = yield* finishedJob
          const tasks = yield* MigrationTaskRepo
          const task = yield* tasks.create({ migrationId, kind: "verify", total: 3, claimedBy: OWNER })
          expect(task.result).toStrictEqual({})
          expect(yield* tasks.saveProgress(task.id, OWNER, { cursor: "map_1", done: 3, result: verifyResult })).toBe(true)
          expect((yield* tasks.get(task.id).pipe(Effect.flatten)).result).toStrictEqual(verifyResult)

          const sql = yield* PgClient.PgClient
          yield* sql`UPDATE migration_tasks SET result = '{"checked":3,"mismatches":[{"mapping_id":"map_1"}]}'::jsonb WHERE id = ${task.id}`
          expect(isDefect(yield* Effect.exit(tasks.get(task.id)))).toBe(true)
          expect(isDefect(yield* Effect.exit(tasks.latest(migrationId, "verify")))).toBe(true)
        })
      )
    )
  })
})

/**
 * HttpApi group of the Stripe customer migration and bulk CSV mapping (SPEC §9).
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"
import { MigrationCounts, VerifyMismatchJson } from "../migration/Model.js"
import { MigrationCursor } from "./Cursors.js"
import { Authentication } from "./Security.js"

const migrationIdParam = HttpApiSchema.param("migration_id", Schema.String)
const taskIdParam = HttpApiSchema.param("task_id", Schema.String)

const ConflictStrategy = Schema.Literal("skip", "overwrite", "fail")

export const StartMigration = Schema.Struct({
  dry_run: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  create_missing_customers: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  conflict_strategy: Schema.optionalWith(ConflictStrategy, { default: () => "skip" as const })
})

export const MigrationStarted = Schema.Struct({ migration_id: Schema.String, status: Schema.Literal("running") })

/** The job's counts as the API shows them (the model's own). */
export const MigrationCountsView = MigrationCounts

export const MigrationProblemView = Schema.Struct({
  stripe_customer_id: Schema.String,
  external_id: Schema.optional(Schema.String),
  code: Schema.String,
  message: Schema.String,
  conflict_with: Schema.optional(
    Schema.Struct({ customer_id: Schema.optional(Schema.String), stripe_customer_id: Schema.optional(Schema.String) })
  ),
  line: Schema.optional(Schema.Number)
})

const CustomersKept = Schema.Array(
  Schema.Struct({ customer_id: Schema.String, external_id: Schema.String, reason: Schema.Literal("has_events", "mapped_since") })
)

export const RollbackView = Schema.Struct({
  migration_id: Schema.String,
  status: Schema.Literal("rolled_back"),
  rolled_back_at: Schema.String,
  mappings_removed: Schema.Number,
  mappings_restored: Schema.Number,
  customers_removed: Schema.Number,
  /** The first 1,000 kept customers; customers_kept_total counts them all. */
  customers_kept: CustomersKept,
  customers_kept_total: Schema.optional(Schema.Number)
})

export const MigrationView = Schema.Struct({
  migration_id: Schema.String,
  kind: Schema.Literal("stripe_customers", "csv"),
  status: Schema.Literal("running", "completed", "failed", "rolled_back"),
  dry_run: Schema.Boolean,
  options: Schema.Struct({ create_missing_customers: Schema.Boolean, conflict_strategy: ConflictStrategy }),
  counts: MigrationCountsView,
  progress: Schema.Struct({
    pages: Schema.Number,
    last_cursor: Schema.NullOr(Schema.String),
    /** CSV imports: data rows processed so far, and in the file (null until counted). */
    rows_done: Schema.Number,
    rows_total: Schema.NullOr(Schema.Number)
  }),
  problems: Schema.Array(MigrationProblemView),
  problems_total: Schema.Number,
  error: Schema.NullOr(Schema.String),
  started_at: Schema.String,
  finished_at: Schema.NullOr(Schema.String),
  heartbeat_at: Schema.String,
  rollback: Schema.NullOr(RollbackView.pipe(Schema.omit("migration_id", "status"))),
  /** CSV imports, once finished. */
  csv: Schema.NullOr(Schema.Struct({ valid_rows: Schema.Number, applied: Schema.Boolean, overwritten: Schema.Number, warnings_total: Schema.Number }))
})

/** One verify mismatch as the API shows it (the model's own). */
const VerifyMismatchView = VerifyMismatchJson

/** A rollback or verification running (or done) in the background; poll `status_url`. */
export const TaskView = Schema.Struct({
  task_id: Schema.String,
  migration_id: Schema.String,
  kind: Schema.Literal("rollback", "verify"),
  status: Schema.Literal("running", "completed", "failed"),
  status_url: Schema.String,
  /** Entities (rollback) or mappings (verify) handled so far, out of total. */
  progress: Schema.Struct({ done: Schema.Number, total: Schema.Number }),
  result: Schema.Struct({
    mappings_removed: Schema.optional(Schema.Number),
    mappings_restored: Schema.optional(Schema.Number),
    customers_removed: Schema.optional(Schema.Number),
    customers_kept: Schema.optional(CustomersKept),
    customers_kept_total: Schema.optional(Schema.Number),
    checked: Schema.optional(Schema.Number),
    ok: Schema.optional(Schema.Number),
    mismatches: Schema.optional(Schema.Array(VerifyMismatchView)),
    mismatches_total: Schema.optional(Schema.Number)
  }),
  error: Schema.NullOr(Schema.String),
  started_at: Schema.String,
  finished_at: Schema.NullOr(Schema.String),
  heartbeat_at: Schema.String
})

/** A verification: the task, with what it found so far at the top level (as before it ran in the background). */
export const VerifyView = Schema.extend(
  TaskView,
  Schema.Struct({ checked: Schema.Number, ok: Schema.Number, mismatches: Schema.Array(VerifyMismatchView), mismatches_total: Schema.Number })
)

const Flag = Schema.optional(Schema.Literal("true", "false", "1", "0"))

export const CsvImportParams = Schema.Struct({
  verify: Flag,
  all_or_nothing: Flag,
  dry_run: Flag,
  create_missing_customers: Flag,
  conflict_strategy: Schema.optional(ConflictStrategy)
})

export const CsvImportStarted = Schema.Struct({
  migration_id: Schema.String,
  status: Schema.Literal("running"),
  /** GET it for progress (rows_done / rows_total) and, once finished, the outcome. */
  status_url: Schema.String
})

export class MigrationGroup extends HttpApiGroup.make("stripeMigration")
  .add(
    HttpApiEndpoint.post("start", "/v1/stripe/migrate/customers")
      .setPayload(StartMigration)
      .addSuccess(MigrationStarted, { status: 202 })
  )
  .add(
    HttpApiEndpoint.post("importCsv", "/v1/stripe/migrate/customers/csv")
      .setUrlParams(CsvImportParams)
      .setPayload(HttpApiSchema.Text({ contentType: "text/csv" }))
      .addSuccess(CsvImportStarted, { status: 202 })
  )
  .add(HttpApiEndpoint.get("status")`/v1/stripe/migrate/status/${migrationIdParam}`.addSuccess(MigrationView))
  .add(
    HttpApiEndpoint.get("list", "/v1/stripe/migrate")
      .setUrlParams(
        Schema.Struct({
          limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 100))),
          cursor: Schema.optional(MigrationCursor)
        })
      )
      .addSuccess(Schema.Struct({ migrations: Schema.Array(MigrationView), next_cursor: Schema.NullOr(MigrationCursor) }))
  )
  .add(HttpApiEndpoint.post("rollback")`/v1/stripe/migrate/${migrationIdParam}/rollback`.addSuccess(TaskView, { status: 202 }))
  .add(HttpApiEndpoint.post("startVerify")`/v1/stripe/migrate/${migrationIdParam}/verify`.addSuccess(VerifyView, { status: 202 }))
  .add(HttpApiEndpoint.get("verify")`/v1/stripe/migrate/${migrationIdParam}/verify`.addSuccess(VerifyView))
  .add(HttpApiEndpoint.get("task")`/v1/stripe/migrate/tasks/${taskIdParam}`.addSuccess(TaskView))
  .middleware(Authentication) {}

/**
 * What a migration job records: options, counts, progress, problems. Shared by the job
 * repository, the service, the HTTP views and the CLI.
 *
 * The documents stored as JSON (a job's problems, rollback report and CSV summary, a task's
 * result) are Schemas: the repositories decode them field by field when they read them back.
 */
import { Schema } from "effect"
import { CsvProblemCode } from "./CsvMapping.js"

export type ConflictStrategy = "skip" | "overwrite" | "fail"
export type MigrationKind = "stripe_customers" | "csv"
export type MigrationStatus = "running" | "completed" | "failed" | "rolled_back"

export interface MigrationOptions {
  readonly dryRun: boolean
  readonly createMissingCustomers: boolean
  readonly conflictStrategy: ConflictStrategy
}

export const defaultOptions: MigrationOptions = { dryRun: false, createMissingCustomers: true, conflictStrategy: "skip" }

/**
 * Every Stripe customer seen ends in exactly one of mapped, already_mapped, conflicts,
 * missing_external_id, customer_missing, failed; `created` counts customers created on the way.
 */
export const MigrationCounts = Schema.Struct({
  seen: Schema.Number,
  mapped: Schema.Number,
  created: Schema.Number,
  already_mapped: Schema.Number,
  conflicts: Schema.Number,
  missing_external_id: Schema.Number,
  customer_missing: Schema.Number,
  failed: Schema.Number
})
export type MigrationCounts = typeof MigrationCounts.Type

export const zeroCounts: MigrationCounts = {
  seen: 0,
  mapped: 0,
  created: 0,
  already_mapped: 0,
  conflicts: 0,
  missing_external_id: 0,
  customer_missing: 0,
  failed: 0
}

/** A CSV import reports each bad row with its own code (CsvProblemCode) and its line. */
export const ProblemCode = Schema.Union(
  CsvProblemCode,
  Schema.Literal("missing_external_id", "invalid_external_id", "conflict", "overwritten", "customer_missing", "failed")
)
export type ProblemCode = typeof ProblemCode.Type

export const MigrationProblem = Schema.Struct({
  stripe_customer_id: Schema.String,
  external_id: Schema.optional(Schema.String),
  code: ProblemCode,
  message: Schema.String,
  conflict_with: Schema.optional(Schema.Struct({ customer_id: Schema.optional(Schema.String), stripe_customer_id: Schema.optional(Schema.String) })),
  /** CSV imports: the line of the row. */
  line: Schema.optional(Schema.Number)
})
export type MigrationProblem = typeof MigrationProblem.Type

/** The status endpoint keeps the first 100; the total is counted. */
export const MAX_PROBLEMS = 100

export const RollbackReport = Schema.Struct({
  rolled_back_at: Schema.String,
  mappings_removed: Schema.Number,
  mappings_restored: Schema.Number,
  customers_removed: Schema.Number,
  customers_kept: Schema.Array(
    Schema.Struct({ customer_id: Schema.String, external_id: Schema.String, reason: Schema.Literal("has_events", "mapped_since") })
  ),
  /** All kept customers (the list stops at 1,000). */
  customers_kept_total: Schema.optional(Schema.Number)
})
export type RollbackReport = typeof RollbackReport.Type

export interface MigrationJob {
  readonly id: string
  readonly tenantId: string
  readonly environmentId: string
  readonly kind: MigrationKind
  readonly status: MigrationStatus
  readonly dryRun: boolean
  readonly options: MigrationOptions
  readonly cursor: string | null
  readonly pages: number
  readonly counts: MigrationCounts
  readonly problems: ReadonlyArray<MigrationProblem>
  readonly problemsTotal: number
  readonly error: string | null
  readonly startedAt: Date
  readonly finishedAt: Date | null
  readonly heartbeatAt: Date
  readonly claimedBy: string | null
  readonly rollback: RollbackReport | null
  /** CSV imports: data rows in the file (null until counted) and rows processed so far. */
  readonly rowsTotal: number | null
  readonly rowsDone: number
  /** CSV imports, once finished: what the counts do not say. */
  readonly csv: CsvImportSummary | null
}

export const CsvImportSummary = Schema.Struct({
  /** Rows that passed every check (applied, or would be in a dry run / all-or-nothing refusal). */
  valid_rows: Schema.Number,
  applied: Schema.Boolean,
  overwritten: Schema.Number,
  /** Exact repeats of an earlier row (applied once). */
  warnings_total: Schema.Number
})
export type CsvImportSummary = typeof CsvImportSummary.Type

export type TaskKind = "rollback" | "verify"
export type TaskStatus = "running" | "completed" | "failed"

export const VerifyMismatchJson = Schema.Struct({
  mapping_id: Schema.String,
  customer_id: Schema.NullOr(Schema.String),
  external_id: Schema.NullOr(Schema.String),
  stripe_customer_id: Schema.NullOr(Schema.String),
  problem: Schema.String,
  detail: Schema.String
})
export type VerifyMismatchJson = typeof VerifyMismatchJson.Type

/** What a verification found so far (first MAX_PROBLEMS mismatches kept, all counted). */
export const VerifyProgress = Schema.Struct({
  checked: Schema.Number,
  ok: Schema.Number,
  mismatches: Schema.Array(VerifyMismatchJson),
  mismatches_total: Schema.Number
})
export type VerifyProgress = typeof VerifyProgress.Type

export const RollbackProgress = RollbackReport.omit("rolled_back_at")
export type RollbackProgress = typeof RollbackProgress.Type

/** A task's result: what a verification or a rollback has done so far (`{}` before its first chunk). */
export const TaskResult = Schema.partial(Schema.Struct({ ...VerifyProgress.fields, ...RollbackProgress.fields }))
export type TaskResult = typeof TaskResult.Type

/** A rollback or verification of a migration, run in the background in chunks. */
export interface MigrationTask {
  readonly id: string
  readonly tenantId: string
  readonly environmentId: string
  readonly migrationId: string
  readonly kind: TaskKind
  readonly status: TaskStatus
  /** Where the next chunk starts (resume point). */
  readonly cursor: string | null
  readonly done: number
  readonly total: number
  readonly result: TaskResult
  readonly error: string | null
  readonly startedAt: Date
  readonly finishedAt: Date | null
  readonly heartbeatAt: Date
  readonly claimedBy: string | null
}

/** Progress as the job loop keeps it in memory and saves after each page. */
export interface MigrationProgress {
  readonly cursor: string | null
  readonly pages: number
  readonly counts: MigrationCounts
  readonly problems: ReadonlyArray<MigrationProblem>
  readonly problemsTotal: number
}

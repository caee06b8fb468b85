/**
 * What a migration job records: options, counts, progress, problems. Shared by the job
 * repository, the service, the HTTP views and the CLI.
 */

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
export interface MigrationCounts {
  readonly seen: number
  readonly mapped: number
  readonly created: number
  readonly already_mapped: number
  readonly conflicts: number
  readonly missing_external_id: number
  readonly customer_missing: number
  readonly failed: number
}

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

import type { CsvProblemCode } from "./CsvMapping.js"

/** A CSV import reports each bad row with its own code (CsvProblemCode) and its line. */
export type ProblemCode =
  | CsvProblemCode
  | "missing_external_id"
  | "invalid_external_id"
  | "conflict"
  | "overwritten"
  | "customer_missing"
  | "failed"

export interface MigrationProblem {
  readonly stripe_customer_id: string
  readonly external_id?: string | undefined
  readonly code: ProblemCode
  readonly message: string
  readonly conflict_with?: { readonly customer_id?: string | undefined; readonly stripe_customer_id?: string | undefined } | undefined
  /** CSV imports: the line of the row. */
  readonly line?: number | undefined
}

/** The status endpoint keeps the first 100; the total is counted. */
export const MAX_PROBLEMS = 100

export interface RollbackReport {
  readonly rolled_back_at: string
  readonly mappings_removed: number
  readonly mappings_restored: number
  readonly customers_removed: number
  readonly customers_kept: ReadonlyArray<{ readonly customer_id: string; readonly external_id: string; readonly reason: "has_events" | "mapped_since" }>
  /** All kept customers (the list stops at 1,000). */
  readonly customers_kept_total?: number | undefined
}

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

export interface CsvImportSummary {
  /** Rows that passed every check (applied, or would be in a dry run / all-or-nothing refusal). */
  readonly valid_rows: number
  readonly applied: boolean
  readonly overwritten: number
  /** Exact repeats of an earlier row (applied once). */
  readonly warnings_total: number
}

export type TaskKind = "rollback" | "verify"
export type TaskStatus = "running" | "completed" | "failed"

export interface VerifyMismatchJson {
  readonly mapping_id: string
  readonly customer_id: string | null
  readonly external_id: string | null
  readonly stripe_customer_id: string | null
  readonly problem: string
  readonly detail: string
}

/** What a verification found so far (first MAX_PROBLEMS mismatches kept, all counted). */
export interface VerifyProgress {
  readonly checked: number
  readonly ok: number
  readonly mismatches: ReadonlyArray<VerifyMismatchJson>
  readonly mismatches_total: number
}

export type RollbackProgress = Omit<RollbackReport, "rolled_back_at">

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
  readonly result: Partial<VerifyProgress & RollbackProgress>
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

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

export type ProblemCode =
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
}

/** Progress as the job loop keeps it in memory and saves after each page. */
export interface MigrationProgress {
  readonly cursor: string | null
  readonly pages: number
  readonly counts: MigrationCounts
  readonly problems: ReadonlyArray<MigrationProblem>
  readonly problemsTotal: number
}

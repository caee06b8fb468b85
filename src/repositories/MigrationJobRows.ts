/**
 * The rows MigrationJobRepo reads, as Schemas (SqlSchema Result schemas), and what a job row
 * becomes. Kept apart from the repository so each stays a readable size.
 *
 * JSON columns are read as text and parsed here: the client's result transform would otherwise
 * camelCase the keys inside them (`already_mapped`, `stripe_customer_id`). Every one of them is
 * decoded field by field: counts and options by the stored shapes below, problems, the rollback
 * report and the CSV summary by the Schemas of Model.ts they were written from.
 */
import { Schema } from "effect"
import { DbDate, DbInt } from "../db/Rows.js"
import {
  CsvImportSummary,
  MigrationCounts,
  type MigrationJob,
  MigrationProblem,
  type MigrationProgress,
  RollbackReport,
  zeroCounts
} from "../migration/Model.js"

/** Counts as stored: any of them may be absent (a job written before a count existed), plus the problems' total. */
const StoredCounts = Schema.partial(Schema.Struct({ ...MigrationCounts.fields, problems_total: Schema.Number }))

const StoredOptions = Schema.Struct({
  create_missing_customers: Schema.optional(Schema.Boolean),
  conflict_strategy: Schema.optional(Schema.Literal("skip", "overwrite", "fail"))
})

export const JobRowSchema = Schema.Struct({
  id: Schema.String,
  tenantId: Schema.String,
  environmentId: Schema.String,
  kind: Schema.Literal("stripe_customers", "csv"),
  status: Schema.Literal("running", "completed", "failed", "rolled_back"),
  dryRun: Schema.Boolean,
  optionsJson: Schema.parseJson(StoredOptions),
  cursor: Schema.NullOr(Schema.String),
  pages: DbInt,
  countsJson: Schema.parseJson(StoredCounts),
  problemsJson: Schema.parseJson(Schema.Array(MigrationProblem)),
  error: Schema.NullOr(Schema.String),
  startedAt: DbDate,
  finishedAt: Schema.NullOr(DbDate),
  heartbeatAt: DbDate,
  claimedBy: Schema.NullOr(Schema.String),
  rollbackJson: Schema.NullOr(Schema.parseJson(RollbackReport)),
  rowsTotal: Schema.NullOr(DbInt),
  rowsDone: DbInt,
  resultJson: Schema.NullOr(Schema.parseJson(CsvImportSummary))
})
export type JobRow = typeof JobRowSchema.Type

export const toJob = (r: JobRow): MigrationJob => {
  const { problems_total, ...rest } = r.countsJson
  return {
    id: r.id,
    tenantId: r.tenantId,
    environmentId: r.environmentId,
    kind: r.kind,
    status: r.status,
    dryRun: r.dryRun,
    options: {
      dryRun: r.dryRun,
      createMissingCustomers: r.optionsJson.create_missing_customers ?? true,
      conflictStrategy: r.optionsJson.conflict_strategy ?? "skip"
    },
    cursor: r.cursor,
    pages: r.pages,
    counts: { ...zeroCounts, ...rest },
    problems: r.problemsJson,
    problemsTotal: problems_total ?? 0,
    error: r.error,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    heartbeatAt: r.heartbeatAt,
    claimedBy: r.claimedBy,
    rollback: r.rollbackJson,
    rowsTotal: r.rowsTotal,
    rowsDone: r.rowsDone,
    csv: r.resultJson
  }
}

export const countsJson = (p: Pick<MigrationProgress, "counts" | "problemsTotal">) =>
  JSON.stringify({ ...p.counts, problems_total: p.problemsTotal } satisfies MigrationCounts & typeof StoredCounts.Type)

/** A mapping row as stored, for restoring it on rollback (kept as JSON in migration_replaced_mappings). */
export const MappingSnapshotSchema = Schema.Struct({
  id: Schema.String,
  customerId: Schema.String,
  providerCustomerId: Schema.String,
  status: Schema.String,
  source: Schema.String,
  migrationId: Schema.NullOr(Schema.String),
  metadataJson: Schema.String,
  createdAt: Schema.String
})
export interface MappingSnapshot extends Schema.Schema.Type<typeof MappingSnapshotSchema> {}

/** A mapping a page's links may touch, with its customer's external id (MigrationJobRepo.mappingsTouching). */
export const TouchingRowSchema = Schema.Struct({
  ...MappingSnapshotSchema.fields,
  createdAt: DbDate,
  customerExternalId: Schema.NullOr(Schema.String)
})

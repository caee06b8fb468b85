/** The sync ledger's rows and filters (`stripe_sync_batches`, `stripe_sync_runs`). */
import { Schema } from "effect"
import * as Decimal from "../../domain/Decimal.js"
import { DbDate, DbInt, DbQuantity } from "../../db/Rows.js"

export type SyncStatus = "pending" | "sending" | "synced" | "failed" | "skipped"
export type SkipReason = "no_mapping" | "too_late" | "zero_quantity" | "mapping_deleted" | "unsupported_formula" | "pre_aggregated_meter"

/** A batch to create (one aggregate group of one window pass). */
export interface NewBatch {
  readonly customerId: string
  readonly meterId: string
  readonly eventType: string
  readonly aggregatedQuantity: string
  readonly sentQuantity: string | null
  readonly eventCount: number
  readonly identifier: string
  readonly providerMeterId: string | null
  readonly status: "pending" | "skipped"
  readonly skipReason: SkipReason | null
  readonly ingestedAfter: Date | null
}

/**
 * What a mark needs to find a batch: its primary key (id, window_start). window_start is the
 * ledger's partition key (monthly partitions, migrations/0013), so a mark by key touches only the
 * months its batches lie in.
 */
export interface BatchKey {
  readonly id: string
  readonly windowStart: Date
}

export interface BatchRow {
  readonly id: string
  readonly customerId: string
  readonly meterId: string
  readonly eventType: string
  readonly windowStart: Date
  readonly windowEnd: Date
  readonly sequence: number
  readonly aggregatedQuantity: string
  readonly sentQuantity: string | null
  readonly eventCount: number
  readonly identifier: string
  readonly providerMeterId: string | null
  readonly syncStatus: SyncStatus
  readonly skipReason: SkipReason | null
  readonly retryCount: number
  readonly errorCode: string | null
  readonly errorMessage: string | null
  readonly ingestedAfter: Date | null
  readonly watermark: Date
  readonly firstSentAt: Date | null
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly syncedAt: Date | null
}

export interface MeterMark {
  readonly meterId: string
  readonly watermark: Date
  readonly dueThrough: Date
}

export interface RunCounts {
  readonly windows: number
  readonly batchesCreated: number
  readonly batchesSynced: number
  readonly batchesFailed: number
  readonly batchesSkipped: number
}

export interface RunRow extends RunCounts {
  readonly id: string
  readonly trigger: "schedule" | "manual"
  readonly status: "running" | "completed" | "partial" | "failed"
  readonly startedAt: Date
  readonly finishedAt: Date | null
  readonly error: string | null
}

export interface BatchFilter {
  readonly status?: SyncStatus | undefined
  readonly customerId?: string | undefined
  readonly meterId?: string | undefined
  readonly from?: Date | undefined
  readonly to?: Date | undefined
  readonly limit: number
  /** keyset: (window_start, id) of the last row of the previous page, newest first */
  readonly before?: { readonly windowStart: Date; readonly id: string } | undefined
}

/** Which failed batches POST /v1/stripe/sync/batches/retry puts back in the queue. */
export interface RequeueFilter {
  readonly needsReview: boolean
  readonly customerId?: string | undefined
  readonly meterId?: string | undefined
  readonly errorCode?: string | undefined
  readonly from?: Date | undefined
  readonly to?: Date | undefined
  readonly dryRun: boolean
}

/** Error codes that must never be resent automatically. */
export const NEEDS_REVIEW = "needs_review"

export const BATCH_COLS = `id, customer_id, meter_id, event_type, window_start, window_end, sequence,
  aggregated_quantity::text AS aggregated_quantity, sent_quantity::text AS sent_quantity, event_count, identifier,
  provider_meter_id, sync_status, skip_reason, retry_count, error_code, error_message,
  ingested_after, watermark, first_sent_at, created_at, updated_at, synced_at`

const Status = Schema.Literal("pending", "sending", "synced", "failed", "skipped")
const Skip = Schema.Literal("no_mapping", "too_late", "zero_quantity", "mapping_deleted", "unsupported_formula", "pre_aggregated_meter")

/** A row of BATCH_COLS, decoded: quantities exact and canonical, counts as integers. */
const BatchRowStruct = Schema.Struct({
  id: Schema.String,
  customerId: Schema.String,
  meterId: Schema.String,
  eventType: Schema.String,
  windowStart: DbDate,
  windowEnd: DbDate,
  sequence: DbInt,
  aggregatedQuantity: DbQuantity,
  sentQuantity: Schema.NullOr(DbQuantity),
  eventCount: DbInt,
  identifier: Schema.String,
  providerMeterId: Schema.NullOr(Schema.String),
  syncStatus: Status,
  skipReason: Schema.NullOr(Skip),
  retryCount: DbInt,
  errorCode: Schema.NullOr(Schema.String),
  errorMessage: Schema.NullOr(Schema.String),
  ingestedAfter: Schema.NullOr(DbDate),
  watermark: DbDate,
  firstSentAt: Schema.NullOr(DbDate),
  createdAt: DbDate,
  updatedAt: DbDate,
  syncedAt: Schema.NullOr(DbDate)
})
export const BatchRowSchema = BatchRowStruct

/**
 * The push queue's lean decoding of the same row (Queue.ts `pushQueue`, the sync's hot path: every
 * batch is read there once per run). The schema above costs ≈ 9× this per row (bench/row-decode.ts,
 * BENCHMARKS.md); here only what the driver does not already give in the row's type is converted:
 * quantities to their canonical text (exact, Decimal) and counts from int8 text.
 */
export const leanBatchRow = (r: typeof BatchRowStruct.Encoded): BatchRow => ({
  ...r,
  windowStart: r.windowStart as Date,
  windowEnd: r.windowEnd as Date,
  ingestedAfter: r.ingestedAfter as Date | null,
  watermark: r.watermark as Date,
  firstSentAt: r.firstSentAt as Date | null,
  createdAt: r.createdAt as Date,
  updatedAt: r.updatedAt as Date,
  syncedAt: r.syncedAt as Date | null,
  aggregatedQuantity: Decimal.normalize(r.aggregatedQuantity),
  sentQuantity: r.sentQuantity === null ? null : Decimal.normalize(r.sentQuantity),
  eventCount: Number(r.eventCount),
  retryCount: Number(r.retryCount),
  sequence: Number(r.sequence)
})

/** A row of `stripe_sync_runs`. */
const RunRowStruct = Schema.Struct({
  id: Schema.String,
  trigger: Schema.Literal("schedule", "manual"),
  status: Schema.Literal("running", "completed", "partial", "failed"),
  startedAt: DbDate,
  finishedAt: Schema.NullOr(DbDate),
  error: Schema.NullOr(Schema.String),
  windows: DbInt,
  batchesCreated: DbInt,
  batchesSynced: DbInt,
  batchesFailed: DbInt,
  batchesSkipped: DbInt
})
export const RunRowSchema = RunRowStruct

/** Key of a (window, meter) progress entry. */
export const progressKey = (windowStart: Date, meterId: string) => `${windowStart.getTime()}|${meterId}`
/** Key of a (customer, meter) pair. */
export const pairKey = (customerId: string, meterId: string) => `${customerId}\u0000${meterId}`

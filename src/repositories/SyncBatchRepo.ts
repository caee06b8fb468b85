/**
 * The sync ledger (`stripe_sync_batches`) and the pipeline's progress tables
 * (`stripe_sync_windows`, `stripe_sync_window_meters`, `stripe_sync_meter_marks`), plus the run
 * log (`stripe_sync_runs`). Every statement is scoped by the CurrentTenant.
 *
 * Bulk writes pass one array per column (`unnest`, src/db/SqlArrays.ts) or one `jsonb_to_recordset`
 * parameter: a page of 10,000 batches is one statement with a handful of parameters. Quantities
 * travel as decimal strings and are cast to numeric by the database, never through a JS number.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Option } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import { asOwner } from "../db/RowSecurity.js"
import * as Decimal from "../domain/Decimal.js"
import { newId } from "../domain/Ids.js"
import { textArray } from "../db/SqlArrays.js"

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

const BATCH_COLS = `id, customer_id, meter_id, event_type, window_start, window_end, sequence,
  aggregated_quantity::text AS aggregated_quantity, sent_quantity::text AS sent_quantity, event_count, identifier,
  provider_meter_id, sync_status, skip_reason, retry_count, error_code, error_message,
  ingested_after, watermark, first_sent_at, created_at, updated_at, synced_at`

interface RawBatch extends Omit<BatchRow, "eventCount" | "retryCount" | "sequence"> {
  readonly eventCount: string | number
  readonly retryCount: string | number
  readonly sequence: string | number
}

const toBatch = (r: RawBatch): BatchRow => ({
  ...r,
  aggregatedQuantity: Decimal.normalize(r.aggregatedQuantity),
  sentQuantity: r.sentQuantity === null ? null : Decimal.normalize(r.sentQuantity),
  eventCount: Number(r.eventCount),
  retryCount: Number(r.retryCount),
  sequence: Number(r.sequence)
})

export class SyncBatchRepo extends Effect.Service<SyncBatchRepo>()("flexprice/SyncBatchRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql.literal(BATCH_COLS)

    // ---- progress

    const meterMarks = (meterIds: ReadonlyArray<string>) =>
      meterIds.length === 0
        ? Effect.succeed(new Map<string, MeterMark>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<MeterMark>`SELECT meter_id, watermark, due_through FROM stripe_sync_meter_marks
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND meter_id IN ${sql.in(meterIds)}`
          ).pipe(Effect.map((rows) => new Map(rows.map((r) => [r.meterId, r]))))

    /** Marks only move forward (a replica with a slower clock cannot move them back). */
    const advanceMark = (meterId: string, watermark: Date, dueThrough: Date) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO stripe_sync_meter_marks (tenant_id, environment_id, meter_id, watermark, due_through)
          VALUES (${t.tenantId}, ${t.environmentId}, ${meterId}, ${watermark}, ${dueThrough})
          ON CONFLICT (tenant_id, environment_id, meter_id) DO UPDATE SET
            watermark = GREATEST(stripe_sync_meter_marks.watermark, EXCLUDED.watermark),
            due_through = GREATEST(stripe_sync_meter_marks.due_through, EXCLUDED.due_through),
            updated_at = now()`
      ).pipe(Effect.asVoid)

    /** Progress watermark per (window start ms, meter) for the given windows. */
    const windowProgress = (windowStarts: ReadonlyArray<Date>, meterIds: ReadonlyArray<string>) =>
      windowStarts.length === 0 || meterIds.length === 0
        ? Effect.succeed(new Map<string, Date>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ windowStart: Date; meterId: string; watermark: Date }>`SELECT window_start, meter_id, watermark
              FROM stripe_sync_window_meters
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND meter_id IN ${sql.in(meterIds)}
                AND window_start IN ${sql.in(windowStarts)}`
          ).pipe(
            Effect.map((rows) => new Map(rows.map((r) => [progressKey(new Date(r.windowStart), r.meterId), new Date(r.watermark)])))
          )

    /**
     * The same progress for one window, locked until the transaction ends: a window pass re-reads
     * what it planned from, so two passes over one window can never both commit.
     */
    const windowProgressForUpdate = (windowStart: Date, meterIds: ReadonlyArray<string>) =>
      meterIds.length === 0
        ? Effect.succeed(new Map<string, Date>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ meterId: string; watermark: Date }>`SELECT meter_id, watermark
              FROM stripe_sync_window_meters
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND meter_id IN ${sql.in(meterIds)} AND window_start = ${windowStart}
              FOR UPDATE`
          ).pipe(Effect.map((rows) => new Map(rows.map((r) => [r.meterId, new Date(r.watermark)]))))

    /** Next sequence of a window pass (one per pass, shared by its meters). */
    const nextSequence = (windowStart: Date) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ lastSequence: number }>`SELECT last_sequence FROM stripe_sync_windows
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND window_start = ${windowStart}`
      ).pipe(Effect.map((rows) => (rows[0] ? Number(rows[0].lastSequence) : 0) + 1))

    /** Records a window pass: must run in the same transaction as the pass's batches. */
    const recordWindowPass = (input: {
      readonly windowStart: Date
      readonly windowEnd: Date
      readonly sequence: number
      readonly watermark: Date
      readonly meterIds: ReadonlyArray<string>
    }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        Effect.all(
          [
            sql`INSERT INTO stripe_sync_windows (tenant_id, environment_id, window_start, window_end, watermark, last_sequence)
              VALUES (${t.tenantId}, ${t.environmentId}, ${input.windowStart}, ${input.windowEnd}, ${input.watermark}, ${input.sequence})
              ON CONFLICT (tenant_id, environment_id, window_start) DO UPDATE SET
                watermark = GREATEST(stripe_sync_windows.watermark, EXCLUDED.watermark),
                last_sequence = GREATEST(stripe_sync_windows.last_sequence, EXCLUDED.last_sequence),
                updated_at = now()`,
            input.meterIds.length === 0
              ? Effect.void
              : sql`INSERT INTO stripe_sync_window_meters (tenant_id, environment_id, window_start, meter_id, window_end, watermark)
                  SELECT ${t.tenantId}, ${t.environmentId}, ${input.windowStart}, m.meter_id, ${input.windowEnd}, ${input.watermark}
                  FROM jsonb_array_elements_text(${JSON.stringify(input.meterIds)}::jsonb) AS m(meter_id)
                  ON CONFLICT (tenant_id, environment_id, meter_id, window_start) DO UPDATE SET
                    watermark = GREATEST(stripe_sync_window_meters.watermark, EXCLUDED.watermark),
                    updated_at = now()`
          ],
          { discard: true }
        )
      )

    // ---- ledger writes

    const insertBatches = (window: { readonly start: Date; readonly end: Date }, sequence: number, watermark: Date, rows: ReadonlyArray<NewBatch>) =>
      rows.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) => {
            const col = (f: (b: NewBatch) => string | null) => textArray(rows.map(f))
            return sql`INSERT INTO stripe_sync_batches (id, tenant_id, environment_id, customer_id, meter_id, event_type,
                window_start, window_end, sequence, aggregated_quantity, sent_quantity, event_count, identifier,
                provider_meter_id, sync_status, skip_reason, ingested_after, watermark)
              SELECT r.id, ${t.tenantId}, ${t.environmentId}, r.customer_id, r.meter_id, r.event_type,
                ${window.start}, ${window.end}, ${sequence}, r.aggregated_quantity, r.sent_quantity,
                r.event_count, r.identifier, r.provider_meter_id, r.sync_status, r.skip_reason, r.ingested_after, ${watermark}
              FROM unnest(${textArray(rows.map(() => newId.syncBatch()))}::text[], ${col((b) => b.customerId)}::text[],
                  ${col((b) => b.meterId)}::text[], ${col((b) => b.eventType)}::text[],
                  ${col((b) => b.aggregatedQuantity)}::numeric[], ${col((b) => b.sentQuantity)}::numeric[],
                  ${col((b) => String(b.eventCount))}::bigint[], ${col((b) => b.identifier)}::text[],
                  ${col((b) => b.providerMeterId)}::text[], ${col((b) => b.status)}::text[], ${col((b) => b.skipReason)}::text[],
                  ${col((b) => b.ingestedAfter?.toISOString() ?? null)}::timestamptz[])
                AS r(id, customer_id, meter_id, event_type, aggregated_quantity, sent_quantity, event_count, identifier,
                  provider_meter_id, sync_status, skip_reason, ingested_after)`
          }).pipe(Effect.asVoid)

    /**
     * Σ aggregated − Σ sent per (customer, meter) over batches with a sent quantity: what the next
     * batch of that pair still owes Stripe (whole-unit fractions, digits beyond 15). Archived
     * batches count through their pair's `carry` (LedgerArchiveRepo.ts); one statement, so an
     * archive pass moving rows meanwhile cannot make a batch count twice or not at all.
     */
    const outstanding = (customerIds: ReadonlyArray<string>, meterIds: ReadonlyArray<string>) =>
      customerIds.length === 0 || meterIds.length === 0
        ? Effect.succeed(new Map<string, string>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ customerId: string; meterId: string; outstanding: string }>`
              SELECT customer_id, meter_id, SUM(owed)::text AS outstanding
              FROM (
                SELECT customer_id, meter_id, aggregated_quantity - sent_quantity AS owed
                FROM stripe_sync_batches
                WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                  AND sent_quantity IS NOT NULL AND sent_quantity <> aggregated_quantity
                  AND meter_id = ANY(${textArray(meterIds)}::text[])
                  AND customer_id = ANY(${textArray(customerIds)}::text[])
                UNION ALL
                SELECT customer_id, meter_id, carry
                FROM stripe_sync_ledger_pairs
                WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND carry <> 0
                  AND meter_id = ANY(${textArray(meterIds)}::text[])
                  AND customer_id = ANY(${textArray(customerIds)}::text[])
              ) owed
              GROUP BY customer_id, meter_id`
          ).pipe(Effect.map((rows) => new Map(rows.map((r) => [pairKey(r.customerId, r.meterId), Decimal.normalize(r.outstanding)]))))

    /**
     * Fresh planner statistics for the ledger, after a large pass. Embedded PGlite runs no
     * autovacuum, so without this the planner never has any: it then takes the tenant's window
     * index for `id = ANY(...)` updates and walks every batch of the tenant per statement instead
     * of the primary key (sending + synced marks of 40,000 of 100,000 batches: 6.0 s → 3.9 s on PGlite).
     * Table-wide maintenance, not tenant data, so not scoped.
     */
    const refreshStatistics = sql`ANALYZE stripe_sync_batches`.pipe(Effect.asVoid, asOwner("only the table owner may ANALYZE"))

    // ---- push queue

    /**
     * Batches to push, oldest window first, after a keyset cursor: pending and sending ones
     * (a crash may have left `sending`), and failed ones below the retry cap that are not
     * waiting for an operator nor held after a Stripe error report (BatchRepairRepo). The cursor makes each row visited at most once per run, so a
     * batch failed in this run is retried by a later run, not by this one.
     */
    const pushQueue = (opts: {
      readonly after: Option.Option<{ readonly windowStart: Date; readonly id: string }>
      readonly limit: number
      readonly retryCap: number
      readonly windowFrom?: Date | undefined
      readonly windowTo?: Date | undefined
    }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<RawBatch>`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND sync_status IN ('pending', 'sending', 'failed')
            AND (sync_status IN ('pending', 'sending')
                 OR (sync_status = 'failed' AND retry_count < ${opts.retryCap} AND COALESCE(error_code, '') <> ${NEEDS_REVIEW}
                     AND stripe_error_event_id IS NULL))
            ${opts.windowFrom ? sql`AND window_start >= ${opts.windowFrom}` : sql``}
            ${opts.windowTo ? sql`AND window_start < ${opts.windowTo}` : sql``}
            ${Option.match(opts.after, {
              onNone: () => sql``,
              onSome: (c) => sql`AND (window_start, id) > (${c.windowStart}, ${c.id})`
            })}
          ORDER BY window_start, id
          LIMIT ${opts.limit}`
      ).pipe(Effect.map((rows) => rows.map(toBatch)))

    // One text[] parameter however many ids (a page of 2,000 as 2,000 parameters cost more to
    // bind and plan than the update itself); `= ANY` still uses the primary key.
    const idIn = (ids: ReadonlyArray<string>) => sql`id = ANY(${textArray(ids)}::text[])`

    /** Before the Stripe call: the first attempt's time is kept (the 24 h dedup rule reads it). */
    const markSending = (ids: ReadonlyArray<string>, now: Date) =>
      ids.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches SET sync_status = 'sending', first_sent_at = COALESCE(first_sent_at, ${now}),
                updated_at = ${now}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND ${idIn(ids)}`
          ).pipe(Effect.asVoid)

    const markSynced = (ids: ReadonlyArray<string>, now: Date, note?: { readonly code: string; readonly message: string }) =>
      ids.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches SET sync_status = 'synced', synced_at = ${now}, updated_at = ${now},
                error_code = ${note?.code ?? null}, error_message = ${note?.message ?? null}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND ${idIn(ids)}
                AND sync_status <> 'synced'`
          ).pipe(Effect.asVoid)

    /** Transient failure (outage, rate limit, open circuit): back to pending, never failed. */
    const markPending = (ids: ReadonlyArray<string>, now: Date, error: { readonly code: string; readonly message: string }) =>
      ids.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches SET sync_status = 'pending', error_code = ${error.code},
                error_message = ${error.message}, updated_at = ${now}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND ${idIn(ids)}
                AND sync_status <> 'synced'`
          ).pipe(Effect.asVoid)

    /** Non-retryable failure: Stripe's code and message kept, retry_count incremented. */
    const markFailed = (ids: ReadonlyArray<string>, now: Date, error: { readonly code: string; readonly message: string }) =>
      ids.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches SET sync_status = 'failed', retry_count = retry_count + 1,
                error_code = ${error.code}, error_message = ${error.message}, updated_at = ${now}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND ${idIn(ids)}
                AND sync_status <> 'synced'`
          ).pipe(Effect.asVoid)

    const markSkipped = (ids: ReadonlyArray<string>, now: Date, reason: SkipReason) =>
      ids.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches SET sync_status = 'skipped', skip_reason = ${reason}, updated_at = ${now}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND ${idIn(ids)}
                AND sync_status <> 'synced'`
          ).pipe(Effect.asVoid)

    /** Never attempted after all (a stop): back to pending with the first-attempt time it had before. */
    const restorePending = (
      rows: ReadonlyArray<{ readonly id: string; readonly firstSentAt: Date | null }>,
      now: Date,
      error: { readonly code: string; readonly message: string }
    ) =>
      rows.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches b SET sync_status = 'pending', first_sent_at = r.first_sent_at::timestamptz,
                error_code = ${error.code}, error_message = ${error.message}, updated_at = ${now}
              FROM jsonb_to_recordset(${JSON.stringify(
                rows.map((r) => ({ id: r.id, first_sent_at: r.firstSentAt?.toISOString() ?? null }))
              )}::jsonb) AS r(id text, first_sent_at text)
              WHERE b.tenant_id = ${t.tenantId} AND b.environment_id = ${t.environmentId} AND b.id = r.id
                AND b.sync_status = 'sending'`
          ).pipe(Effect.asVoid)

    /** A verified-not-delivered batch past Stripe's dedup horizon may be sent again as new. */
    const clearFirstSent = (ids: ReadonlyArray<string>, now: Date) =>
      ids.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches SET first_sent_at = NULL, sync_status = 'pending', updated_at = ${now}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND ${idIn(ids)}
                AND sync_status <> 'synced'`
          ).pipe(Effect.asVoid)

    /** Skipped batches (no customer mapping / meter mapping gone) that may become sendable. */
    const skippedForReevaluation = (opts: { readonly since: Date; readonly limit: number; readonly afterId?: string | undefined }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<RawBatch>`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND sync_status = 'skipped' AND skip_reason IN ('no_mapping', 'mapping_deleted')
            AND window_start >= ${opts.since}
            ${opts.afterId ? sql`AND id > ${opts.afterId}` : sql``}
          ORDER BY id
          LIMIT ${opts.limit}`
      ).pipe(Effect.map((rows) => rows.map(toBatch)))

    /** A re-evaluated skipped batch becomes pending with its send amount fixed now. */
    const makeSendable = (rows: ReadonlyArray<{ readonly id: string; readonly sentQuantity: string; readonly providerMeterId: string; readonly status: "pending" | "skipped"; readonly skipReason: SkipReason | null }>, now: Date) =>
      rows.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`UPDATE stripe_sync_batches b SET sync_status = r.sync_status, skip_reason = r.skip_reason,
                sent_quantity = r.sent_quantity::numeric, provider_meter_id = r.provider_meter_id, updated_at = ${now}
              FROM jsonb_to_recordset(${JSON.stringify(
                rows.map((r) => ({
                  id: r.id,
                  sent_quantity: r.sentQuantity,
                  provider_meter_id: r.providerMeterId,
                  sync_status: r.status,
                  skip_reason: r.skipReason
                }))
              )}::jsonb) AS r(id text, sent_quantity text, provider_meter_id text, sync_status text, skip_reason text)
              WHERE b.tenant_id = ${t.tenantId} AND b.environment_id = ${t.environmentId} AND b.id = r.id
                AND b.sync_status = 'skipped'`
          ).pipe(Effect.asVoid)

    /** Σ sent of synced batches per window for one (customer, meter) in [from, to). */
    const syncedTotalsFor = (customerId: string, meterId: string, from: Date, to: Date) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<RawBatch>`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND customer_id = ${customerId} AND meter_id = ${meterId}
            AND window_start >= ${from} AND window_start < ${to}
            AND sent_quantity IS NOT NULL`
      ).pipe(Effect.map((rows) => rows.map(toBatch)))

    // ---- runs

    const startRun = (trigger: "schedule" | "manual", now: Date) =>
      Effect.flatMap(CurrentTenant, (t) => {
        const id = `ssr_${newId.syncBatch().slice(4)}`
        return sql`INSERT INTO stripe_sync_runs (id, tenant_id, environment_id, trigger, status, started_at)
          VALUES (${id}, ${t.tenantId}, ${t.environmentId}, ${trigger}, 'running', ${now})`.pipe(Effect.as(id))
      })

    const finishRun = (id: string, status: RunRow["status"], counts: RunCounts, now: Date, error: string | null) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE stripe_sync_runs SET status = ${status}, finished_at = ${now}, windows = ${counts.windows},
            batches_created = ${counts.batchesCreated}, batches_synced = ${counts.batchesSynced},
            batches_failed = ${counts.batchesFailed}, batches_skipped = ${counts.batchesSkipped}, error = ${error}
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}`
      ).pipe(Effect.asVoid)

    const lastRun = Effect.flatMap(CurrentTenant, (t) =>
      sql<RunRow>`SELECT id, trigger, status, started_at, finished_at, windows, batches_created, batches_synced,
          batches_failed, batches_skipped, error
        FROM stripe_sync_runs WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
        ORDER BY started_at DESC LIMIT 1`
    ).pipe(
      Effect.map((rows) =>
        Option.map(Option.fromNullable(rows[0]), (r) => ({
          ...r,
          windows: Number(r.windows),
          batchesCreated: Number(r.batchesCreated),
          batchesSynced: Number(r.batchesSynced),
          batchesFailed: Number(r.batchesFailed),
          batchesSkipped: Number(r.batchesSkipped)
        }))
      )
    )

    // ---- reads for the API

    const list = (f: BatchFilter) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<RawBatch>`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            ${f.status ? sql`AND sync_status = ${f.status}` : sql``}
            ${f.customerId ? sql`AND customer_id = ${f.customerId}` : sql``}
            ${f.meterId ? sql`AND meter_id = ${f.meterId}` : sql``}
            ${f.from ? sql`AND window_start >= ${f.from}` : sql``}
            ${f.to ? sql`AND window_start < ${f.to}` : sql``}
            ${f.before ? sql`AND (window_start, id) < (${f.before.windowStart}, ${f.before.id})` : sql``}
          ORDER BY window_start DESC, id DESC
          LIMIT ${f.limit}`
      ).pipe(Effect.map((rows) => rows.map(toBatch)))

    const statusCounts = Effect.flatMap(CurrentTenant, (t) =>
      sql<{ syncStatus: SyncStatus; skipReason: string | null; n: string }>`SELECT sync_status, skip_reason, SUM(n) AS n FROM (
          SELECT sync_status, skip_reason, COUNT(*) AS n
          FROM stripe_sync_batches WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          GROUP BY sync_status, skip_reason
          UNION ALL
          -- archived batches: final ones, counted without their skip reason
          SELECT s.status, NULL, s.n FROM (
            SELECT SUM(synced_batches) AS synced, SUM(skipped_batches) AS skipped FROM stripe_sync_ledger_pairs
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          ) a CROSS JOIN LATERAL (VALUES ('synced', a.synced), ('skipped', a.skipped)) AS s(status, n)
          WHERE s.n > 0
        ) counts GROUP BY sync_status, skip_reason`
    ).pipe(Effect.map((rows) => rows.map((r) => ({ status: r.syncStatus, skipReason: r.skipReason, count: Number(r.n) }))))

    const recentStats = (since: Date) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ synced: string; failed: string; p50: number | null; p95: number | null }>`
          SELECT COUNT(*) FILTER (WHERE sync_status = 'synced') AS synced,
                 COUNT(*) FILTER (WHERE sync_status = 'failed') AS failed,
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (synced_at - window_end)))
                   FILTER (WHERE sync_status = 'synced') AS p50,
                 percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (synced_at - window_end)))
                   FILTER (WHERE sync_status = 'synced') AS p95
          FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND updated_at >= ${since}`
      ).pipe(
        Effect.map((rows) => {
          const r = rows[0]
          return {
            synced: Number(r?.synced ?? 0),
            failed: Number(r?.failed ?? 0),
            lagP50Seconds: r?.p50 === null || r?.p50 === undefined ? null : Number(r.p50),
            lagP95Seconds: r?.p95 === null || r?.p95 === undefined ? null : Number(r.p95)
          }
        })
      )

    // Written as the open index's own predicate so the planner reads its first entry.
    const oldestUnsyncedWindow = Effect.flatMap(CurrentTenant, (t) =>
      sql<{ windowStart: Date | null }>`SELECT MIN(window_start) AS window_start FROM stripe_sync_batches
        WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          AND sync_status IN ('pending', 'sending', 'failed')`
    ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]?.windowStart), (d) => new Date(d))))

    /**
     * Synced totals per (customer, meter, hour) in [from, to), for reconciliation; archived hours
     * from their summaries (`from`/`to` are hour boundaries: Reconciliation.ts rounds them).
     */
    const syncedHourly = (from: Date, to: Date) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ customerId: string; meterId: string; hour: Date; total: string; absTotal: string; batches: string }>`
          SELECT customer_id, meter_id, hour, SUM(total)::text AS total, SUM(abs_total)::text AS abs_total, SUM(batches) AS batches
          FROM (
            SELECT customer_id, meter_id, date_trunc('hour', window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
                   SUM(sent_quantity) AS total, SUM(ABS(sent_quantity)) AS abs_total, COUNT(*) AS batches
            FROM stripe_sync_batches
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND sync_status = 'synced' AND window_start >= ${from} AND window_start < ${to}
            GROUP BY customer_id, meter_id, 3
            UNION ALL
            SELECT customer_id, meter_id, hour, synced_total, synced_abs_total, synced_batches
            FROM stripe_sync_ledger_archive
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND synced_batches > 0 AND hour >= ${from} AND hour < ${to}
          ) hourly
          GROUP BY customer_id, meter_id, hour
          ORDER BY customer_id, meter_id, hour`
      ).pipe(
        Effect.map((rows) =>
          rows.map((r) => ({
            ...r,
            total: Decimal.normalize(r.total),
            absTotal: Decimal.normalize(r.absTotal),
            hour: new Date(r.hour),
            batches: Number(r.batches)
          }))
        )
      )

    /** Batch counts per (window, status) for windows starting in [from, to). */
    const countsByWindow = (from: Date, to: Date) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ windowStart: Date; syncStatus: SyncStatus; n: string }>`SELECT window_start, sync_status, COUNT(*) AS n
          FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND window_start >= ${from} AND window_start < ${to}
          GROUP BY window_start, sync_status`
      ).pipe(
        Effect.map((rows) => {
          const out = new Map<number, Record<SyncStatus, number>>()
          for (const r of rows) {
            const k = new Date(r.windowStart).getTime()
            const c = out.get(k) ?? { pending: 0, sending: 0, synced: 0, failed: 0, skipped: 0 }
            c[r.syncStatus] = Number(r.n)
            out.set(k, c)
          }
          return out
        })
      )

    /** Aggregation types of meters (deleted ones included: their rows still sync). */
    const meterAggregations = (meterIds: ReadonlyArray<string>) =>
      meterIds.length === 0
        ? Effect.succeed(new Map<string, string>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ id: string; aggregationType: string }>`SELECT id, aggregation_type FROM meters
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id IN ${sql.in(meterIds)}`
          ).pipe(Effect.map((rows) => new Map(rows.map((r) => [r.id, r.aggregationType]))))

    // ---- repairs

    /**
     * Failed batches an operator asks to send again (POST /v1/stripe/sync/batches/retry): back to
     * `pending` with a fresh retry budget. Each keeps its row, identifier and first_sent_at, so
     * Stripe's identifier dedup still answers for a resend inside 24 h and the resend guard
     * (ResendGuard.ts) checks Stripe's summaries first beyond it: a re-queue never bills twice.
     * `needsReview`: only the batches the guard held for an operator (else only the others).
     * `dryRun`: counts without writing. Returns the ids.
     */
    const requeueFailed = (f: RequeueFilter, now: Date) =>
      Effect.flatMap(CurrentTenant, (t) => {
        const where = sql`tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND sync_status = 'failed'
            AND ${f.needsReview ? sql`error_code = ${NEEDS_REVIEW}` : sql`COALESCE(error_code, '') <> ${NEEDS_REVIEW}`}
            ${f.customerId ? sql`AND customer_id = ${f.customerId}` : sql``}
            ${f.meterId ? sql`AND meter_id = ${f.meterId}` : sql``}
            ${f.errorCode ? sql`AND error_code = ${f.errorCode}` : sql``}
            ${f.from ? sql`AND window_start >= ${f.from}` : sql``}
            ${f.to ? sql`AND window_start < ${f.to}` : sql``}`
        return (
          f.dryRun
            ? sql<{ id: string }>`SELECT id FROM stripe_sync_batches WHERE ${where}`
            : sql<{ id: string }>`UPDATE stripe_sync_batches SET sync_status = 'pending', retry_count = 0, updated_at = ${now}
                WHERE ${where} RETURNING id`
        ).pipe(Effect.map((rows) => rows.map((r) => r.id)))
      })

    return {
      requeueFailed,
      meterMarks,
      advanceMark,
      windowProgress,
      windowProgressForUpdate,
      nextSequence,
      recordWindowPass,
      insertBatches,
      refreshStatistics,
      outstanding,
      pushQueue,
      markSending,
      markSynced,
      markPending,
      markFailed,
      markSkipped,
      restorePending,
      clearFirstSent,
      skippedForReevaluation,
      makeSendable,
      syncedTotalsFor,
      startRun,
      finishRun,
      lastRun,
      list,
      statusCounts,
      recentStats,
      oldestUnsyncedWindow,
      syncedHourly,
      countsByWindow,
      meterAggregations
    } as const
  })
}) {}

export const progressKey = (windowStart: Date, meterId: string) => `${windowStart.getTime()}|${meterId}`
export const pairKey = (customerId: string, meterId: string) => `${customerId}\u0000${meterId}`

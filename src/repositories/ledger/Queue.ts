/**
 * The push queue and the status marks the push records, plus re-evaluation and operator re-queues.
 * Every statement is scoped by the CurrentTenant (see ../SyncBatchRepo.ts).
 */
import { SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { orDieOnRow } from "../../db/Rows.js"
import { CurrentTenant } from "../../domain/Tenant.js"
import { textArray } from "../../db/SqlArrays.js"
import type { Fragment } from "@effect/sql/Statement"
import {
  type BatchKey,
  BATCH_COLS,
  BatchRowSchema,
  leanBatchRow,
  NEEDS_REVIEW,
  type RequeueFilter,
  type SkipReason
} from "./Model.js"

const Keyset = Schema.Struct({ windowStart: Schema.DateFromSelf, id: Schema.String })
const PushQueueRequest = Schema.Struct({
  after: Schema.OptionFromSelf(Keyset),
  limit: Schema.Int,
  retryCap: Schema.Int,
  windowFrom: Schema.optional(Schema.DateFromSelf),
  windowTo: Schema.optional(Schema.DateFromSelf)
})
const ReevaluationRequest = Schema.Struct({ since: Schema.DateFromSelf, limit: Schema.Int, afterId: Schema.optional(Schema.String) })
const PairRangeRequest = Schema.Struct({ customerId: Schema.String, meterId: Schema.String, from: Schema.DateFromSelf, to: Schema.DateFromSelf })

export const makeQueue = (sql: PgClient.PgClient) => {
  const cols = sql.literal(BATCH_COLS)

  // ---- push queue

  /**
   * Batches to push, oldest window first, after a keyset cursor: pending and sending ones
   * (a crash may have left `sending`), and failed ones below the retry cap that are not
   * waiting for an operator nor held after a Stripe error report (BatchRepairRepo). The cursor makes each row visited at most once per run, so a
   * batch failed in this run is retried by a later run, not by this one.
   *
   * The cursor's values reach the planner as scalar subqueries, i.e. unknown at plan time. As
   * constants, the planner estimated the row comparison from `window_start > cursor` alone, which
   * is ~0 rows while the cursor sits in the newest window (the usual case: one window of 100,000
   * batches), and chose to read every remaining open batch and sort them instead of walking the
   * open index in order and stopping after one page (EXPLAIN ANALYZE: 80,000 rows read and
   * sorted per page, ~0.7 s, against 2,000 rows read, ~17 ms). `window_start >= cursor` lets
   * run-time pruning drop the months before the cursor.
   *
   * `queue_status IN ('pending', 'failed')` is the open index's predicate (migrations/0015:
   * sync_status with `sending` folded into `pending`, so the `sending` mark changes no indexed
   * value); the planner uses a partial index only for a query that states its predicate.
   */
  const pushQueue = (opts: typeof PushQueueRequest.Type) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<typeof BatchRowSchema.Encoded>`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND queue_status IN ('pending', 'failed')
            AND (sync_status IN ('pending', 'sending')
                 OR (sync_status = 'failed' AND retry_count < ${opts.retryCap} AND COALESCE(error_code, '') <> ${NEEDS_REVIEW}
                     AND stripe_error_event_id IS NULL))
            ${opts.windowFrom ? sql`AND window_start >= ${opts.windowFrom}` : sql``}
            ${opts.windowTo ? sql`AND window_start < ${opts.windowTo}` : sql``}
            ${Option.match(opts.after, {
              onNone: () => sql``,
              onSome: (c) => sql`AND window_start >= (SELECT ${c.windowStart}::timestamptz)
                AND (window_start, id) > ((SELECT ${c.windowStart}::timestamptz), (SELECT ${c.id}::text))`
            })}
          ORDER BY window_start, id
          LIMIT ${opts.limit}`
      ).pipe(Effect.map((rows) => rows.map(leanBatchRow)))

  /** The earliest and latest window start of `keys` (non-empty): constants the planner prunes partitions by. */
  const windowRange = (keys: ReadonlyArray<BatchKey>) => {
    let lo = keys[0]!.windowStart
    let hi = lo
    for (const k of keys) {
      if (k.windowStart < lo) lo = k.windowStart
      if (k.windowStart > hi) hi = k.windowStart
    }
    return { lo, hi }
  }

  /**
   * The batches `keys` name, for `UPDATE stripe_sync_batches b … FROM ${from} WHERE ${where}`:
   * one statement per call, joined by the primary key (id, window_start) — one index probe per
   * batch — with the keys' window range as constants, so the planner prunes every month
   * partition the batches do not lie in (migrations/0013). The arrays are scalar subqueries on
   * purpose: as constants the planner knew their length, compared 2,000 probes at random-page
   * cost with one sequential read of the month, and chose the read (EXPLAIN ANALYZE: the whole
   * partition read per mark, 100,000 rows in the bench, against 2,000 probes in ~12 ms).
   * `extra`: one more per-batch column, as (name, SQL type, values).
   */
  const byKey = (
    keys: ReadonlyArray<BatchKey>,
    extra: { readonly name: string; readonly type: "timestamptz"; readonly values: ReadonlyArray<string | null> }
  ) => {
    const { lo, hi } = windowRange(keys)
    const ids = sql`(SELECT ${textArray(keys.map((k) => k.id))}::text[])`
    const starts = sql`(SELECT ${textArray(keys.map((k) => k.windowStart.toISOString()))}::timestamptz[])`
    return {
      from: sql`unnest(${ids}, ${starts}, (SELECT ${textArray(extra.values)}::timestamptz[])) AS r(id, window_start, ${sql.literal(extra.name)})`,
      where: (t: { readonly tenantId: string; readonly environmentId: string }) =>
        sql`b.tenant_id = ${t.tenantId} AND b.environment_id = ${t.environmentId}
          AND b.id = r.id AND b.window_start = r.window_start AND b.window_start >= ${lo} AND b.window_start <= ${hi}`
    }
  }

  /**
   * A mark of the batches `keys` name: `set` and `guard` are SQL over the batch `b`.
   *
   * No join: `id = ANY(…)` and `window_start = ANY(…)` over constant arrays are hashed filters,
   * linear in the tenant's batches inside the keys' window range (the range constants still prune
   * the month partitions). The join `byKey` builds put the ledger on the outer side of a nested
   * loop whenever the planner had no statistics for the tenant's rows (a new or small tenant; PGlite
   * has no autovacuum) and compared every named batch with every batch of the range — 2,000 × 2,000
   * per mark, measured 33 s on PGlite and 4.8 – 6.7 s on PostgreSQL (BENCHMARKS.md, "#14 reshaping").
   * Batch ids are 120 random bits (`newId.syncBatch`), unique across windows, so matching the id
   * and one of the named windows names exactly the (id, window_start) keys given.
   */
  const mark = (keys: ReadonlyArray<BatchKey>, set: Fragment, guard: Fragment = sql``) =>
    keys.length === 0
      ? Effect.void
      : Effect.flatMap(CurrentTenant, (t) => {
          const { lo, hi } = windowRange(keys)
          const starts = [...new Set(keys.map((k) => k.windowStart.toISOString()))]
          return sql`UPDATE stripe_sync_batches b SET ${set}
            WHERE b.tenant_id = ${t.tenantId} AND b.environment_id = ${t.environmentId}
              AND b.window_start >= ${lo} AND b.window_start <= ${hi}
              AND b.window_start = ANY(${textArray(starts)}::timestamptz[])
              AND b.id = ANY(${textArray(keys.map((k) => k.id))}::text[]) ${guard}`
        }).pipe(Effect.asVoid)

  /** Before the Stripe call: the first attempt's time is kept (the 24 h dedup rule reads it). */
  const markSending = (keys: ReadonlyArray<BatchKey>, now: Date) =>
    mark(keys, sql`sync_status = 'sending', first_sent_at = COALESCE(b.first_sent_at, ${now}), updated_at = ${now}`)

  const markSynced = (keys: ReadonlyArray<BatchKey>, now: Date, note?: { readonly code: string; readonly message: string }) =>
    mark(
      keys,
      sql`sync_status = 'synced', synced_at = ${now}, updated_at = ${now},
        error_code = ${note?.code ?? null}, error_message = ${note?.message ?? null}`,
      sql`AND b.sync_status <> 'synced'`
    )

  /** Transient failure (outage, rate limit, open circuit): back to pending, never failed. */
  const markPending = (keys: ReadonlyArray<BatchKey>, now: Date, error: { readonly code: string; readonly message: string }) =>
    mark(
      keys,
      sql`sync_status = 'pending', error_code = ${error.code}, error_message = ${error.message}, updated_at = ${now}`,
      sql`AND b.sync_status <> 'synced'`
    )

  /** Non-retryable failure: Stripe's code and message kept, retry_count incremented. */
  const markFailed = (keys: ReadonlyArray<BatchKey>, now: Date, error: { readonly code: string; readonly message: string }) =>
    mark(
      keys,
      sql`sync_status = 'failed', retry_count = b.retry_count + 1, error_code = ${error.code},
        error_message = ${error.message}, updated_at = ${now}`,
      sql`AND b.sync_status <> 'synced'`
    )

  const markSkipped = (keys: ReadonlyArray<BatchKey>, now: Date, reason: SkipReason) =>
    mark(keys, sql`sync_status = 'skipped', skip_reason = ${reason}, updated_at = ${now}`, sql`AND b.sync_status <> 'synced'`)

  /** Never attempted after all (a stop): back to pending with the first-attempt time it had before. */
  const restorePending = (
    rows: ReadonlyArray<BatchKey & { readonly firstSentAt: Date | null }>,
    now: Date,
    error: { readonly code: string; readonly message: string }
  ) =>
    rows.length === 0
      ? Effect.void
      : Effect.flatMap(CurrentTenant, (t) => {
          const k = byKey(rows, { name: "first_sent_at", type: "timestamptz", values: rows.map((r) => r.firstSentAt?.toISOString() ?? null) })
          return sql`UPDATE stripe_sync_batches b SET sync_status = 'pending', first_sent_at = r.first_sent_at,
              error_code = ${error.code}, error_message = ${error.message}, updated_at = ${now}
            FROM ${k.from}
            WHERE ${k.where(t)} AND b.sync_status = 'sending'`
        }).pipe(Effect.asVoid)

  /** A verified-not-delivered batch past Stripe's dedup horizon may be sent again as new. */
  const clearFirstSent = (keys: ReadonlyArray<BatchKey>, now: Date) =>
    mark(keys, sql`first_sent_at = NULL, sync_status = 'pending', updated_at = ${now}`, sql`AND b.sync_status <> 'synced'`)

  /** Skipped batches (no customer mapping / meter mapping gone) that may become sendable; the re-evaluation index's predicate. */
  const skippedRows = SqlSchema.findAll({
    Request: ReevaluationRequest,
    Result: BatchRowSchema,
    execute: (opts) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND queue_status = 'skipped' AND skip_reason IN ('no_mapping', 'mapping_deleted')
            AND window_start >= ${opts.since}
            ${opts.afterId ? sql`AND id > ${opts.afterId}` : sql``}
          ORDER BY id
          LIMIT ${opts.limit}`
      )
  })
  const skippedForReevaluation = (opts: typeof ReevaluationRequest.Type) => orDieOnRow(skippedRows(opts))

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
  const syncedRows = SqlSchema.findAll({
    Request: PairRangeRequest,
    Result: BatchRowSchema,
    execute: ({ customerId, meterId, from, to }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND customer_id = ${customerId} AND meter_id = ${meterId}
            AND window_start >= ${from} AND window_start < ${to}
            AND sent_quantity IS NOT NULL`
      )
  })
  const syncedTotalsFor = (customerId: string, meterId: string, from: Date, to: Date) =>
    orDieOnRow(syncedRows({ customerId, meterId, from, to }))

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


  return { pushQueue, markSending, markSynced, markPending, markFailed, markSkipped, restorePending, clearFirstSent, skippedForReevaluation, makeSendable, syncedTotalsFor, requeueFailed } as const
}

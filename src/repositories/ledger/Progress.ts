/**
 * The pipeline's progress (windows, meter marks) and the ledger writes of one window pass.
 * Every statement is scoped by the CurrentTenant (see ../SyncBatchRepo.ts).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { CurrentTenant } from "../../domain/Tenant.js"
import { asOwner } from "../../db/RowSecurity.js"
import * as Decimal from "../../domain/Decimal.js"
import { newId } from "../../domain/Ids.js"
import { textArray } from "../../db/SqlArrays.js"
import {
  type MeterMark,
  type NewBatch,
  pairKey,
  progressKey
} from "./Model.js"

export const makeProgress = (sql: PgClient.PgClient) => {
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


  return { meterMarks, advanceMark, windowProgress, windowProgressForUpdate, nextSequence, recordWindowPass, insertBatches, outstanding, refreshStatistics } as const
}

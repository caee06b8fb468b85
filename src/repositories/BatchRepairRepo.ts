/**
 * Ledger repairs after Stripe lost or dropped usage it had answered 200 for (the v2 stream
 * validates asynchronously): marking reported batches failed, re-queueing them once a mapping
 * fix can make them succeed, and re-queueing what reconciliation proves missing. Kept beside
 * SyncBatchRepo (same table, same tenant scoping) so the push path's repository stays about the
 * push. Every statement is scoped by the CurrentTenant and conditional on the state it expects,
 * so a concurrent run or a duplicate delivery changes nothing twice.
 */
import { SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, DbInt, orDieOnRow } from "../db/Rows.js"
import { textArray } from "../db/SqlArrays.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { NEEDS_REVIEW } from "./SyncBatchRepo.js"

export interface ReportedBatch {
  readonly id: string
  readonly identifier: string
  readonly syncStatus: string
  readonly stripeErrorEventId: string | null
  readonly syncedAt: Date | null
}

export interface DropReport {
  /** Meter event identifiers Stripe named. */
  readonly identifiers: ReadonlyArray<string>
  /** Stripe's error code (`meter_event_customer_not_found`, ...). */
  readonly code: string
  readonly message: string
  /** The v2 event id of the error report. */
  readonly eventId: string
  /**
   * Only a batch synced at or before this instant can be the one reported: a batch re-sent after
   * the report's validation window (after a fix) is a later, separate send.
   */
  readonly sentBefore: Date
  readonly at: Date
}

export interface SyncedInHour {
  readonly id: string
  readonly sentQuantity: string
  readonly syncStatus: string
  readonly requeueCount: number
  readonly syncedAt: Date | null
}

const ReportedBatchRow = Schema.Struct({
  id: Schema.String,
  identifier: Schema.String,
  syncStatus: Schema.String,
  stripeErrorEventId: Schema.NullOr(Schema.String),
  syncedAt: Schema.NullOr(DbDate)
})

/** The send amount stays the exact text of the numeric column (`::text`), compared as a decimal by the caller. */
const SyncedInHourRow = Schema.Struct({
  id: Schema.String,
  sentQuantity: Schema.String,
  syncStatus: Schema.String,
  requeueCount: DbInt,
  syncedAt: Schema.NullOr(DbDate)
})

const decodeRequeued = Schema.decodeUnknown(Schema.Array(Schema.Struct({ id: Schema.String, errorCode: Schema.String })))

export class BatchRepairRepo extends Effect.Service<BatchRepairRepo>()("flexprice/BatchRepairRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient

    const reportedRows = SqlSchema.findAll({
      Request: Schema.Array(Schema.String),
      Result: ReportedBatchRow,
      execute: (identifiers) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT id, identifier, sync_status, stripe_error_event_id, synced_at FROM stripe_sync_batches
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND identifier = ANY(${textArray(identifiers)}::text[])`
        )
    })
    /** The ledger's batches with these identifiers (the error report's sample). */
    const byIdentifiers = (identifiers: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<ReportedBatch>, SqlError, CurrentTenant> =>
      identifiers.length === 0 ? Effect.succeed([]) : orDieOnRow(reportedRows(identifiers))

    /**
     * Synced batches Stripe reports dropped → `failed` with Stripe's code, held (the push queue
     * skips failed batches with `stripe_error_event_id`) until a repair re-queues them. Returns
     * the ids changed; batches not `synced`, or synced after `sentBefore`, are left alone.
     */
    const markDropped = (r: DropReport) =>
      r.identifiers.length === 0
        ? Effect.succeed<ReadonlyArray<string>>([])
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ id: string }>`UPDATE stripe_sync_batches SET sync_status = 'failed', error_code = ${r.code},
                error_message = ${r.message.slice(0, 2000)}, stripe_error_event_id = ${r.eventId}, updated_at = ${r.at}
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND identifier = ANY(${textArray(r.identifiers)}::text[])
                AND sync_status = 'synced' AND synced_at <= ${r.sentBefore}
              RETURNING id`
          ).pipe(Effect.map((rows) => rows.map((x) => x.id)))

    /**
     * Held batches whose cause a mapping change can have removed go back to pending: customer
     * codes once the customer's active mapping changed after the dropped send, meter codes once
     * the meter's mapping did. At most `maxRequeues` times per batch, so a change that fixed
     * nothing cannot loop. The batch keeps its identifier and send amount; its first-send time
     * too, so a resend past Stripe's 24 h dedup is checked against Stripe first (ResendGuard).
     * Runs every sync run: its first two conditions are the predicate of the held-batch index
     * (migrations/0014, on `queue_status` since 0015), so it reads only held batches, not the
     * tenant's ledger.
     */
    const requeueRepaired = (opts: {
      readonly customerCodes: ReadonlyArray<string>
      readonly meterCodes: ReadonlyArray<string>
      readonly maxRequeues: number
      readonly at: Date
    }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE stripe_sync_batches b SET sync_status = 'pending',
            stripe_error_event_id = NULL, requeue_count = b.requeue_count + 1,
            error_message = 're-queued: the mapping changed after Stripe dropped this batch (' || b.error_code || ')',
            updated_at = ${opts.at}
          WHERE b.tenant_id = ${t.tenantId} AND b.environment_id = ${t.environmentId}
            AND b.queue_status = 'failed' AND b.stripe_error_event_id IS NOT NULL
            AND b.requeue_count < ${opts.maxRequeues}
            AND (
              (b.error_code = ANY(${textArray(opts.customerCodes)}::text[]) AND EXISTS (
                SELECT 1 FROM customer_integration_mappings m
                WHERE m.tenant_id = b.tenant_id AND m.environment_id = b.environment_id AND m.provider_type = 'stripe'
                  AND m.customer_id = b.customer_id AND m.status = 'active' AND m.updated_at > b.synced_at))
              OR
              (b.error_code = ANY(${textArray(opts.meterCodes)}::text[]) AND EXISTS (
                SELECT 1 FROM meter_provider_mappings mm
                WHERE mm.tenant_id = b.tenant_id AND mm.environment_id = b.environment_id AND mm.provider_type = 'stripe'
                  AND mm.meter_id = b.meter_id AND mm.sync_enabled AND mm.updated_at > b.synced_at))
            )
          RETURNING b.id, b.error_code`
      ).pipe(Effect.flatMap((rows) => Effect.orDie(decodeRequeued(rows))))

    /**
     * Every batch of one (customer, meter) with a window starting in [from, to): what an hour of
     * Stripe's summary is compared with. Only batches that carry a send amount.
     */
    const hourRows = SqlSchema.findAll({
      Request: Schema.Struct({ customerId: Schema.String, meterId: Schema.String, from: Schema.DateFromSelf, to: Schema.DateFromSelf }),
      Result: SyncedInHourRow,
      execute: ({ customerId, meterId, from, to }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT id, sent_quantity::text AS sent_quantity, sync_status, requeue_count, synced_at FROM stripe_sync_batches
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND customer_id = ${customerId} AND meter_id = ${meterId}
              AND window_start >= ${from} AND window_start < ${to}
              AND sent_quantity IS NOT NULL`
        )
    })
    const batchesInHour = (customerId: string, meterId: string, from: Date, to: Date): Effect.Effect<ReadonlyArray<SyncedInHour>, SqlError, CurrentTenant> =>
      orDieOnRow(hourRows({ customerId, meterId, from, to }))

    /**
     * Synced batches that Stripe's summary proves absent go back to pending (first time), or to
     * failed / needs_review (missing again after a re-queue: resending cannot be trusted to help).
     */
    const requeueMissing = (ids: ReadonlyArray<string>, at: Date, message: string) =>
      ids.length === 0
        ? Effect.succeed({ requeued: 0, review: 0 })
        : Effect.flatMap(CurrentTenant, (t) =>
            Effect.all({
              requeued: sql<{ id: string }>`UPDATE stripe_sync_batches SET sync_status = 'pending', requeue_count = requeue_count + 1,
                  error_code = 'stripe_missing', error_message = ${message}, updated_at = ${at}
                WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                  AND id = ANY(${textArray(ids)}::text[]) AND sync_status = 'synced' AND requeue_count = 0
                RETURNING id`,
              review: sql<{ id: string }>`UPDATE stripe_sync_batches SET sync_status = 'failed', error_code = ${NEEDS_REVIEW},
                  error_message = ${`missing in Stripe again after a re-queue; not resent automatically (${message})`}, updated_at = ${at}
                WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                  AND id = ANY(${textArray(ids)}::text[]) AND sync_status = 'synced' AND requeue_count > 0
                RETURNING id`
            })
          ).pipe(Effect.map((r) => ({ requeued: r.requeued.length, review: r.review.length })))

    const changedRow = SqlSchema.findOne({
      Request: Schema.Struct({ customerId: Schema.String, meterId: Schema.String }),
      Result: Schema.Struct({ customerAt: Schema.NullOr(DbDate), meterAt: Schema.NullOr(DbDate) }),
      execute: ({ customerId, meterId }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT
              (SELECT MAX(updated_at) FROM customer_integration_mappings WHERE tenant_id = ${t.tenantId}
                 AND environment_id = ${t.environmentId} AND provider_type = 'stripe' AND customer_id = ${customerId}) AS customer_at,
              (SELECT MAX(updated_at) FROM meter_provider_mappings WHERE tenant_id = ${t.tenantId}
                 AND environment_id = ${t.environmentId} AND provider_type = 'stripe' AND meter_id = ${meterId}) AS meter_at`
        )
    })
    /** When the current customer / meter mappings last changed (a remap makes older sends incomparable). */
    const mappingChangedAt = (customerId: string, meterId: string): Effect.Effect<Date | null, SqlError, CurrentTenant> =>
      orDieOnRow(changedRow({ customerId, meterId })).pipe(
        Effect.map((row) => {
          const ms = Option.match(row, {
            onNone: (): ReadonlyArray<number> => [],
            onSome: (r) => [r.customerAt, r.meterAt].flatMap((d) => (d === null ? [] : [d.getTime()]))
          })
          return ms.length === 0 ? null : new Date(Math.max(...ms))
        })
      )

    return { byIdentifiers, markDropped, requeueRepaired, batchesInHour, requeueMissing, mappingChangedAt } as const
  })
}) {}

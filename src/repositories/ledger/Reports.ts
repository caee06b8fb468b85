/**
 * Runs and the reads behind the API, the status, reconciliation and the metrics.
 * Every statement is scoped by the CurrentTenant (see ../SyncBatchRepo.ts).
 */
import { SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { CurrentTenant } from "../../domain/Tenant.js"
import { newId } from "../../domain/Ids.js"
import { DbDate, DbInt, DbQuantity, orDieOnRow } from "../../db/Rows.js"
import { BATCH_COLS, type BatchFilter, BatchRowSchema, type RunCounts, type RunRow, RunRowSchema, type SyncStatus } from "./Model.js"

const Status = Schema.Literal("pending", "sending", "synced", "failed", "skipped")
const BatchFilterRequest = Schema.Struct({
  status: Schema.optional(Status),
  customerId: Schema.optional(Schema.String),
  meterId: Schema.optional(Schema.String),
  from: Schema.optional(Schema.DateFromSelf),
  to: Schema.optional(Schema.DateFromSelf),
  limit: Schema.Int,
  before: Schema.optional(Schema.Struct({ windowStart: Schema.DateFromSelf, id: Schema.String }))
})
const RangeRequest = Schema.Struct({ from: Schema.DateFromSelf, to: Schema.DateFromSelf })
/** Reconciliation's side of one (customer, meter, hour): Σ sent and Σ |sent|, exact. */
const HourlyRow = Schema.Struct({
  customerId: Schema.String,
  meterId: Schema.String,
  hour: DbDate,
  total: DbQuantity,
  absTotal: DbQuantity,
  batches: DbInt
})

export const makeReports = (sql: PgClient.PgClient) => {
  const cols = sql.literal(BATCH_COLS)

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

  const lastRunRow = SqlSchema.findOne({
    Request: Schema.Void,
    Result: RunRowSchema,
    execute: () =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`SELECT id, trigger, status, started_at, finished_at, windows, batches_created, batches_synced,
            batches_failed, batches_skipped, error
          FROM stripe_sync_runs WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          ORDER BY started_at DESC LIMIT 1`
      )
  })
  const lastRun = orDieOnRow(lastRunRow(undefined))

  // ---- reads for the API

  const listRows = SqlSchema.findAll({
    Request: BatchFilterRequest,
    Result: BatchRowSchema,
    execute: (f) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`SELECT ${cols} FROM stripe_sync_batches
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            ${f.status ? sql`AND sync_status = ${f.status}` : sql``}
            ${f.customerId ? sql`AND customer_id = ${f.customerId}` : sql``}
            ${f.meterId ? sql`AND meter_id = ${f.meterId}` : sql``}
            ${f.from ? sql`AND window_start >= ${f.from}` : sql``}
            ${f.to ? sql`AND window_start < ${f.to}` : sql``}
            ${f.before ? sql`AND (window_start, id) < (${f.before.windowStart}, ${f.before.id})` : sql``}
          ORDER BY window_start DESC, id DESC
          LIMIT ${f.limit}`
      )
  })
  const list = (f: BatchFilter) => orDieOnRow(listRows(f))

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
        AND queue_status IN ('pending', 'failed')`
  ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]?.windowStart), (d) => new Date(d))))

  /**
   * Synced totals per (customer, meter, hour) in [from, to), for reconciliation; archived hours
   * from their summaries (`from`/`to` are hour boundaries: Reconciliation.ts rounds them).
   */
  const syncedHourlyRows = SqlSchema.findAll({
    Request: RangeRequest,
    Result: HourlyRow,
    execute: ({ from, to }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`
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
      )
  })
  const syncedHourly = (from: Date, to: Date) => orDieOnRow(syncedHourlyRows({ from, to }))

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


  return { startRun, finishRun, lastRun, list, statusCounts, recentStats, oldestUnsyncedWindow, syncedHourly, countsByWindow, meterAggregations } as const
}

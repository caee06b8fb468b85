/**
 * The ledger's archive (migrations/0013): final batches (synced or skipped) whose windows lie
 * wholly before the retention horizon leave `stripe_sync_batches` and are added, in the same
 * statement (so every reader sees a batch either in the ledger or in the archive, never in both
 * or neither), to two summaries holding what the ledger's later readers need:
 *   - `stripe_sync_ledger_pairs`, one row per (tenant, environment, customer, meter): `carry`,
 *     Σ (aggregated − sent) of the archived batches with a sent quantity, which
 *     SyncBatchRepo.outstanding adds to the ledger's own (the whole-unit / 15-digit carry,
 *     src/sync/Carry.ts), and the archived counts SyncBatchRepo.statusCounts adds;
 *   - `stripe_sync_ledger_archive`, one row per pair and UTC hour: `synced_total`,
 *     `synced_abs_total`, `synced_batches`, which SyncBatchRepo.syncedHourly adds to the ledger's
 *     hourly figures for reconciliation (src/sync/Reconciliation.ts).
 * Batch-level detail (GET /v1/stripe/sync/batches, ids, identifiers, errors) is gone for archived
 * windows: Stripe accepts nothing for them any more (35-day horizon), so nothing is resent,
 * verified or re-evaluated there (Push.ts / ResendGuard.ts / Reevaluation.ts only look inside
 * the horizon).
 *
 * Cross-tenant maintenance, run by the retention pass (src/db/Retention.ts), not tenant-scoped.
 */
import { SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbInt, orDieOnRow } from "../db/Rows.js"
import { asSystem } from "../db/RowSecurity.js"

export interface ArchivePass {
  /** batches moved out of the ledger */
  readonly batches: number
  /** archive rows created or added to */
  readonly summaries: number
}

/** The totals both summaries keep per pair; the hourly archive adds `synced_abs_total`. */
const PAIR_TOTALS = ["carry", "aggregated_total", "synced_total", "synced_batches", "skipped_batches", "event_count"] as const

export class LedgerArchiveRepo extends Effect.Service<LedgerArchiveRepo>()("flexprice/LedgerArchiveRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    /** `c = alias.c + EXCLUDED.c, …`: a summary only ever grows by what a pass moves into it. */
    const addedUp = (alias: "a" | "p", columns: ReadonlyArray<string>) =>
      sql.literal(columns.map((c) => `${c} = ${alias}.${c} + EXCLUDED.${c}`).join(", "))

    const chunkCounts = SqlSchema.findOne({
      Request: Schema.Struct({ cutoff: Schema.DateFromSelf, limit: Schema.Int }),
      Result: Schema.Struct({ batches: DbInt, summaries: DbInt, pairs: DbInt }),
      execute: ({ cutoff, limit }) => sql`
        WITH victims AS (
          SELECT id, window_start FROM stripe_sync_batches
          WHERE window_start < ${cutoff} AND window_end <= ${cutoff} AND sync_status IN ('synced', 'skipped')
          LIMIT ${limit}
        ), moved AS (
          DELETE FROM stripe_sync_batches b USING victims v
          WHERE b.id = v.id AND b.window_start = v.window_start
          RETURNING b.tenant_id, b.environment_id, b.customer_id, b.meter_id, b.window_start, b.sync_status,
            b.aggregated_quantity, b.sent_quantity, b.event_count
        ), rolled AS (
          SELECT tenant_id, environment_id, customer_id, meter_id,
            date_trunc('hour', window_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
            COALESCE(SUM(aggregated_quantity - sent_quantity) FILTER (WHERE sent_quantity IS NOT NULL), 0) AS carry,
            SUM(aggregated_quantity) AS aggregated_total,
            COALESCE(SUM(sent_quantity) FILTER (WHERE sync_status = 'synced'), 0) AS synced_total,
            COALESCE(SUM(ABS(sent_quantity)) FILTER (WHERE sync_status = 'synced'), 0) AS synced_abs_total,
            COUNT(*) FILTER (WHERE sync_status = 'synced') AS synced_batches,
            COUNT(*) FILTER (WHERE sync_status = 'skipped') AS skipped_batches,
            SUM(event_count) AS event_count
          FROM moved GROUP BY 1, 2, 3, 4, 5
        ), written AS (
          INSERT INTO stripe_sync_ledger_archive AS a (tenant_id, environment_id, customer_id, meter_id, hour, carry,
            aggregated_total, synced_total, synced_abs_total, synced_batches, skipped_batches, event_count)
          SELECT * FROM rolled
          ON CONFLICT (tenant_id, environment_id, customer_id, meter_id, hour) DO UPDATE SET
            ${addedUp("a", [...PAIR_TOTALS, "synced_abs_total"])}, archived_at = now()
          RETURNING 1
        ), paired AS (
          INSERT INTO stripe_sync_ledger_pairs AS p (tenant_id, environment_id, customer_id, meter_id, carry,
            aggregated_total, synced_total, synced_batches, skipped_batches, event_count)
          SELECT tenant_id, environment_id, customer_id, meter_id, SUM(carry), SUM(aggregated_total), SUM(synced_total),
            SUM(synced_batches), SUM(skipped_batches), SUM(event_count)
          FROM rolled GROUP BY 1, 2, 3, 4
          ON CONFLICT (tenant_id, environment_id, customer_id, meter_id) DO UPDATE SET
            ${addedUp("p", PAIR_TOTALS)}, archived_at = now()
          RETURNING 1
        )
        SELECT (SELECT COUNT(*) FROM moved) AS batches, (SELECT COUNT(*) FROM written) AS summaries,
          (SELECT COUNT(*) FROM paired) AS pairs`
    })
    /**
     * Moves up to `limit` final batches with window_start and window_end at or before `cutoff`
     * (an hour boundary, so an hour is never split between an archived and a live final batch)
     * into the archive. One statement: the DELETE and the additive upsert commit together.
     */
    const archiveChunk = (cutoff: Date, limit: number) =>
      orDieOnRow(chunkCounts({ cutoff, limit })).pipe(
        Effect.map(Option.match({ onNone: () => ({ batches: 0, summaries: 0 }), onSome: (r) => ({ batches: r.batches, summaries: r.summaries }) })),
        asSystem("archiving the ledger of every tenant")
      )

    /** Archives everything final before `cutoff`, a chunk (one transaction) at a time. */
    const archiveBefore = Effect.fn("LedgerArchiveRepo.archiveBefore")(function* (cutoff: Date, chunk = 10_000) {
      let batches = 0
      let summaries = 0
      for (;;) {
        const pass = yield* archiveChunk(cutoff, chunk)
        batches += pass.batches
        summaries += pass.summaries
        if (pass.batches < chunk) return { batches, summaries } satisfies ArchivePass
      }
    })

    /**
     * Monthly partitions of the ledger from this month through `monthsAhead` months on; months
     * ending at or before `dropBefore` that hold no batch any more are dropped (migrations/0013,
     * `flexprice_ledger_partitions`).
     */
    const partitionCounts = SqlSchema.findOne({
      Request: Schema.Struct({ now: Schema.DateFromSelf, through: Schema.DateFromSelf, dropBefore: Schema.DateFromSelf }),
      Result: Schema.Struct({ created: DbInt, dropped: DbInt }),
      execute: ({ now, through, dropBefore }) => sql`SELECT created, dropped FROM flexprice_ledger_partitions(${now}, ${through}, ${dropBefore})`
    })
    const maintainPartitions = Effect.fn("LedgerArchiveRepo.maintainPartitions")(
      (now: Date, monthsAhead: number, dropBefore: Date) =>
        Effect.suspend(() =>
          orDieOnRow(partitionCounts({ now, through: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + monthsAhead, 1)), dropBefore }))
        ),
      Effect.map(Option.match({ onNone: () => ({ created: 0, dropped: 0 }), onSome: (r) => ({ created: r.created, dropped: r.dropped }) })),
      asSystem("partition upkeep of the whole ledger (the function runs as the owner)")
    )

    return { archiveChunk, archiveBefore, maintainPartitions } as const
  })
}) {}

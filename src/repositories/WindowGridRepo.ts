/**
 * The stored window grid of the CurrentTenant (migrations/0008, rules in src/sync/WindowGrid.ts).
 * A change of aggregation_window_minutes is recorded against the end of the latest window the
 * ledger holds, so it must be written while no sync run of the tenant can add windows (the
 * caller holds the tenant's sync lease) and in the transaction that stores the new size.
 */
import { SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, DbInt, orDieOnRow } from "../db/Rows.js"
import { CurrentTenant } from "../domain/Tenant.js"
import * as G from "../sync/WindowGrid.js"

export class WindowGridRepo extends Effect.Service<WindowGridRepo>()("flexprice/WindowGridRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient

    const changeRows = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Schema.Struct({ effectiveFrom: DbDate, minutes: DbInt }),
      execute: () =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT effective_from, minutes FROM stripe_sync_window_grid
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            ORDER BY effective_from`
        )
    })

    /** The grid in force; `currentMinutes` (the stored config's size) everywhere when no change is recorded. */
    const grid = (currentMinutes: number) =>
      orDieOnRow(changeRows(undefined)).pipe(
        Effect.map((rows): G.Grid =>
          rows.length === 0
            ? G.uniform(currentMinutes)
            : G.fromChanges(
                rows[0]!.minutes,
                rows.slice(1).map((r) => ({ from: r.effectiveFrom.getTime(), minutes: r.minutes }))
              )
        )
      )

    /** End of the latest window in the ledger: batches, window passes and per-meter progress. */
    const ledgerEnd = Effect.flatMap(CurrentTenant, (t) =>
      sql<{ ledgerEnd: Date | null }>`SELECT GREATEST(
          (SELECT max(window_end) FROM stripe_sync_batches WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}),
          (SELECT max(window_end) FROM stripe_sync_windows WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}),
          (SELECT max(window_end) FROM stripe_sync_window_meters WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId})
        ) AS ledger_end`
    ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]?.ledgerEnd ?? null), (d) => new Date(d))))

    /**
     * Records that the size goes from `fromMinutes` (the stored config) to `toMinutes`. Returns
     * where the new size starts (None: everywhere, the ledger being empty, or nothing changes).
     */
    const change = (fromMinutes: number, toMinutes: number) =>
      Effect.gen(function* () {
        const t = yield* CurrentTenant
        const current = yield* grid(fromMinutes)
        const end = yield* ledgerEnd
        const next = G.changeSize(current, toMinutes, Option.getOrNull(end))
        yield* sql`DELETE FROM stripe_sync_window_grid WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}`
        if (next.grid.length > 1)
          yield* sql`INSERT INTO stripe_sync_window_grid ${sql.insert(
            next.grid.map((s, i) => ({
              tenantId: t.tenantId,
              environmentId: t.environmentId,
              // the first segment stands for every instant before the second
              effectiveFrom: new Date(i === 0 ? 0 : s.from),
              minutes: s.minutes
            }))
          )}`
        return Option.fromNullable(next.effectiveFrom)
      })

    /**
     * Keeps the size in force when the config row goes away (DELETE /v1/stripe/config): with no
     * row the grid would follow whatever size a later reconnect stores, re-cutting windows the
     * ledger holds. Written only when no change is recorded (a recorded grid is kept as it is).
     */
    const pin = (minutes: number) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO stripe_sync_window_grid (tenant_id, environment_id, effective_from, minutes)
          SELECT ${t.tenantId}, ${t.environmentId}, ${new Date(0)}, ${minutes}
          WHERE NOT EXISTS (SELECT 1 FROM stripe_sync_window_grid WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId})`
      ).pipe(Effect.asVoid)

    /** A grid is recorded (a size change, or a size pinned by a disconnect). */
    const recorded = Effect.flatMap(CurrentTenant, (t) =>
      sql<{ n: number }>`SELECT 1 AS n FROM stripe_sync_window_grid WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} LIMIT 1`
    ).pipe(Effect.map((rows) => rows.length > 0))

    return { grid, ledgerEnd, change, pin, recorded } as const
  })
}) {}

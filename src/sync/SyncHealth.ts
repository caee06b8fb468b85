/**
 * Fleet-wide sync health for the alert rules, read from the database rather than from this
 * process's memory: a tenant's runs may happen on any replica (the lease decides), so only the
 * run log (`stripe_sync_runs`) knows when each tenant last completed a run. The scheduler
 * publishes it on every pass, so every replica exports the same value and a dead replica's
 * tenants still show up as stale on the live ones.
 */
import { SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Metric, Schema } from "effect"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import type { TenantScope } from "../domain/Ids.js"
import * as Metrics from "../observability/Metrics.js"
import { asSystem } from "../db/RowSecurity.js"

export interface TenantLastSuccess {
  readonly scope: Pick<TenantScope, "tenantId" | "environmentId">
  /** finished_at of the latest completed run; the config's created_at when none completed yet */
  readonly lastSuccess: Date
}

/** The ids branded as read: they were checked when the config row was written. */
const Row = Schema.Struct({
  tenantId: Schema.String.pipe(Schema.brand("TenantId")),
  environmentId: Schema.String.pipe(Schema.brand("EnvironmentId")),
  lastSuccess: DbDate
})

export class SyncHealth extends Effect.Service<SyncHealth>()("flexprice/SyncHealth", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient

    /**
     * Every sync-enabled tenant's latest completed run. The correlated subquery walks the run
     * log's (tenant, environment, started_at DESC) index from the newest run until a completed
     * one, so its cost does not grow with the log.
     */
    const healthRows = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Row,
      execute: () => sql`SELECT c.tenant_id, c.environment_id,
        COALESCE((SELECT r.finished_at FROM stripe_sync_runs r
          WHERE r.tenant_id = c.tenant_id AND r.environment_id = c.environment_id AND r.status = 'completed'
          ORDER BY r.started_at DESC LIMIT 1), c.created_at) AS last_success
      FROM stripe_tenant_configs c WHERE c.sync_enabled = true`
    })
    const lastSuccesses = Effect.fn("SyncHealth.lastSuccesses")(
      () => orDieOnRow(healthRows(undefined)),
      Effect.map((rows) =>
        rows.map((r): TenantLastSuccess => ({ scope: { tenantId: r.tenantId, environmentId: r.environmentId }, lastSuccess: r.lastSuccess }))
      ),
      asSystem("the sync health gauge covers every tenant")
    )

    /** Sets `flexprice_sync_last_success_timestamp_seconds` (per tenant, or the stalest tenant). */
    const publish = Effect.gen(function* () {
      const all = yield* lastSuccesses()
      if (all.length === 0) return all
      if (yield* Metrics.tenantLabelsEnabled) {
        for (const t of all)
          yield* Metric.set(
            Metric.taggedWithLabels(Metrics.syncLastSuccessTimestampSeconds, yield* Metrics.tenantTags(t.scope)),
            t.lastSuccess.getTime() / 1000
          )
      } else {
        const stalest = Math.min(...all.map((t) => t.lastSuccess.getTime()))
        yield* Metric.set(Metrics.syncLastSuccessTimestampSeconds, stalest / 1000)
      }
      return all
    })

    return { lastSuccesses, publish } as const
  })
}) {}

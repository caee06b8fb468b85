/** Retention prunes webhook deliveries and sync runs past their age, and nothing younger. */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { pruneOnce } from "../../src/db/Retention.js"
import * as TestApp from "../support/TestApp.js"
import { TestTenant } from "../support/TestApp.js"

layer(TestApp.layer({ env: { FLEXPRICE_RETENTION_WEBHOOK_EVENTS_DAYS: "30", FLEXPRICE_RETENTION_SYNC_RUNS_DAYS: "60" } }), { excludeTestServices: true })(
  "retention",
  (it) => {
    it.effect("deletes rows older than the configured days and keeps the rest", () =>
      Effect.gen(function* () {
        const { tenantId: t, environmentId: e } = (yield* TestTenant).scope
        const day = 86_400_000
        const ago = (d: number) => new Date(Date.now() - d * day)
        const sql = yield* PgClient.PgClient
        for (const [id, age] of [["whe_old", 31], ["whe_new", 29]] as const)
          yield* sql`INSERT INTO webhook_events (id, tenant_id, environment_id, stripe_event_id, type, received_at, status)
            VALUES (${id}, ${t}, ${e}, ${`evt_${id}`}, 'customer.created', ${ago(age)}, 'processed')`
        for (const [id, age] of [["ssr_old", 61], ["ssr_new", 59]] as const)
          yield* sql`INSERT INTO stripe_sync_runs (id, tenant_id, environment_id, trigger, status, started_at)
            VALUES (${id}, ${t}, ${e}, 'schedule', 'completed', ${ago(age)})`
        const pruned = yield* pruneOnce()
        const left = yield* sql<{ id: string }>`SELECT id FROM webhook_events WHERE tenant_id = ${t}
          UNION ALL SELECT id FROM stripe_sync_runs WHERE tenant_id = ${t} ORDER BY id`
        expect(pruned).toEqual({ webhookEvents: 1, syncRuns: 1, archivedBatches: 0 })
        expect(left.map((r) => r.id)).toEqual(["ssr_new", "whe_new"])
      })
    )
  }
)

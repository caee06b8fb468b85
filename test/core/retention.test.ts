/** Retention prunes webhook deliveries and sync runs past their age, and nothing younger. */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { pruneOnce } from "../../src/db/Retention.js"
import { startTestApp, type TestApp } from "../support/app.js"

describe("retention", () => {
  let app: TestApp
  beforeAll(async () => {
    app = await startTestApp({ env: { FLEXPRICE_RETENTION_WEBHOOK_EVENTS_DAYS: "30", FLEXPRICE_RETENTION_SYNC_RUNS_DAYS: "60" } })
  })
  afterAll(() => app?.dispose())

  it("deletes rows older than the configured days and keeps the rest", async () => {
    const { tenantId: t, environmentId: e } = app.scope
    const day = 86_400_000
    const ago = (d: number) => new Date(Date.now() - d * day)
    const counts = await app.run(
      Effect.gen(function* () {
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
        return { pruned, left: left.map((r) => r.id) }
      })
    )
    expect(counts.pruned).toEqual({ webhookEvents: 1, syncRuns: 1, archivedBatches: 0 })
    expect(counts.left).toEqual(["ssr_new", "whe_new"])
  })
})

/**
 * The per-tenant lease (sync_leases): one holder at a time across fibers (and, by the same row,
 * replicas), released after use, taken over once expired, and a manual sync waits for / is
 * refused by a running one.
 */
import { PgClient } from "@effect/sql-pg"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { SyncLease } from "../../src/sync/SyncLease.js"
import { hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

describe("sync lease", () => {
  let h: SyncHarness
  beforeAll(async () => {
    h = await startSyncHarness({ env: { FLEXPRICE_SYNC_LEASE_SECONDS: "2" } })
  })
  afterAll(async () => {
    await h?.dispose()
  })

  it("admits one holder at a time and frees the lease after use", async () => {
    const result = await h.app.run(
      Effect.gen(function* () {
        const lease = yield* SyncLease
        const inside = yield* Deferred.make<void>()
        const done = yield* Deferred.make<void>()
        const first = yield* Effect.fork(
          lease.withLease(h.scope, Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(done)))
        )
        yield* Deferred.await(inside)
        const second = yield* Effect.exit(lease.withLease(h.scope, Effect.succeed("second")))
        yield* Deferred.succeed(done, undefined)
        yield* Fiber.join(first)
        const third = yield* lease.withLease(h.scope, Effect.succeed("third"))
        return { second, third }
      })
    )
    expect(Exit.isFailure(result.second) && JSON.stringify(result.second.cause)).toContain("LeaseBusy")
    expect(result.third).toBe("third")
  })

  it("a dead holder's lease is taken over after it expires", async () => {
    // a replica that died: its row stays, nobody renews it
    await h.app.run(
      Effect.flatMap(PgClient.PgClient, (sql) =>
        sql`INSERT INTO sync_leases (tenant_id, environment_id, owner, expires_at)
          VALUES (${h.scope.tenantId}, ${h.scope.environmentId}, 'dead-replica', now() + interval '1 second')
          ON CONFLICT (tenant_id, environment_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at`
      )
    )
    const busy = await h.app.run(Effect.exit(Effect.flatMap(SyncLease, (l) => l.withLease(h.scope, Effect.succeed(1)))))
    expect(Exit.isFailure(busy)).toBe(true)
    const waited = await h.app.run(Effect.flatMap(SyncLease, (l) => l.withLease(h.scope, Effect.succeed(2), { wait: "5 seconds" })))
    expect(waited).toBe(2)
  })

  it("manual sync waits for a running sync of the same tenant, then runs", async () => {
    await h.configure()
    await h.meter("tokens", { aggregation: "SUM", field: "t" })
    const c = await h.customer("a")
    await h.ingest([{ event_id: "1", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(3), properties: { t: "2" } }])
    const hourStart = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3 * 3_600_000).toISOString()
    const hourEnd = new Date(Date.parse(hourStart) + 3_600_000).toISOString()
    const holder = h.app.run(Effect.flatMap(SyncLease, (l) => l.withLease(h.scope, Effect.sleep("1500 millis"))))
    await new Promise((r) => setTimeout(r, 200))
    const started = Date.now()
    const res = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart, window_end: hourEnd })
    await holder
    expect(res.status).toBe(200)
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000)
    expect(res.body.batches_synced).toBe(1)
    expect(h.stripeTotal(c.stripeId!, "stripe_tokens")).toBe("2")
  })
})

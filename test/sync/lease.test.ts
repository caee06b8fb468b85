/**
 * The per-tenant lease (sync_leases): one holder at a time across fibers (and, by the same row,
 * replicas), released after use, taken over once expired, and a manual sync waits for / is
 * refused by a running one. On PostgreSQL also across two app instances (replicas) sharing one
 * database.
 */
import { PgClient } from "@effect/sql-pg"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { checkFence, LeaseFence, SyncLease } from "../../src/sync/SyncLease.js"
import { SyncPipeline } from "../../src/sync/SyncPipeline.js"
import { SyncService } from "../../src/sync/SyncService.js"
import { WindowPassHook } from "../../src/sync/WindowPass.js"
import { forEachBackend, freshPostgresDatabase, POSTGRES_URL_VAR, startTestApp, type TestApp } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo, startSyncHarness, stripeEnv, type SyncHarness } from "./support.js"

// On PostgreSQL (when FLEXPRICE_TEST_POSTGRES_URL is set) the lease row lives on a real server,
// where replicas would share it; PGlite is the embedded single-process case.
forEachBackend(["pglite", "postgres"], (backend) => describe(`sync lease (${backend})`, () => {
  let h: SyncHarness
  beforeAll(async () => {
    h = await startSyncHarness({ backend, env: { FLEXPRICE_SYNC_LEASE_SECONDS: "2" } })
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
    expect(Exit.isFailure(busy) && JSON.stringify(busy.cause)).toContain("LeaseBusy")
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
    // a running sync: holds the lease for a while, and says when it is inside and when it ends
    const inside = await h.app.run(Deferred.make<void>())
    let holderDone = false
    const holder = h.app.run(
      Effect.flatMap(SyncLease, (l) =>
        l.withLease(
          h.scope,
          Deferred.succeed(inside, undefined).pipe(
            Effect.zipRight(Effect.sleep("1500 millis")),
            Effect.tap(() => Effect.sync(() => void (holderDone = true)))
          )
        )
      )
    )
    await h.app.run(Deferred.await(inside))
    const res = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart, window_end: hourEnd })
    const answeredAfterHolder = holderDone
    await holder
    expect(res.status).toBe(200)
    expect(answeredAfterHolder).toBe(true) // it waited for the running sync instead of running beside it
    expect(res.data.batches_synced).toBe(1)
    expect(h.stripeTotal(c.stripeId!, "stripe_tokens")).toBe("2")
  })
}))

describe("sync lease fencing", () => {
  // A long TTL: the renewal fiber (every TTL/3) must not fire while a test holds the lease, so the
  // takeover below is only seen by the fence, as for a holder whose whole process was paused.
  let h: SyncHarness
  beforeAll(async () => {
    h = await startSyncHarness({ env: { FLEXPRICE_SYNC_LEASE_SECONDS: "60" } })
    await h.app.run(Effect.flatMap(PgClient.PgClient, (sql) => sql`CREATE TABLE fence_probe (v int NOT NULL)`))
  })
  afterAll(async () => {
    await h?.dispose()
  })

  const probeWrite = (v: number) =>
    Effect.flatMap(PgClient.PgClient, (sql) =>
      sql.withTransaction(Effect.zipRight(checkFence, sql`INSERT INTO fence_probe (v) VALUES (${v})`))
    )
  const probeValues = () =>
    h.app.run(Effect.flatMap(PgClient.PgClient, (sql) => sql<{ v: number }>`SELECT v FROM fence_probe ORDER BY v`)).then((rows) => rows.map((r) => r.v))

  it("a holder paused past its lease cannot commit after another owner took over; the new owner can", async () => {
    const outcome = await h.app.run(
      Effect.gen(function* () {
        const lease = yield* SyncLease
        const sql = yield* PgClient.PgClient
        const paused = yield* Deferred.make<void>()
        const wake = yield* Deferred.make<void>()
        const stale = yield* Effect.fork(
          lease.withLease(
            h.scope,
            Effect.gen(function* () {
              yield* probeWrite(1) // before the pause the fence holds
              const before = yield* LeaseFence
              yield* Deferred.succeed(paused, undefined)
              yield* Deferred.await(wake)
              return { token: before.token, write: yield* Effect.exit(probeWrite(2)) }
            })
          )
        )
        yield* Deferred.await(paused)
        // the paused holder's lease runs out; another replica takes it over and writes
        yield* sql`UPDATE sync_leases SET expires_at = now() - interval '1 second'
          WHERE tenant_id = ${h.scope.tenantId} AND environment_id = ${h.scope.environmentId}`
        const takeover = yield* lease.withLease(
          h.scope,
          Effect.gen(function* () {
            yield* probeWrite(3)
            return (yield* LeaseFence).token
          })
        )
        yield* Deferred.succeed(wake, undefined)
        const staleResult = yield* Fiber.join(stale)
        return { staleResult, takeover }
      })
    )
    expect(outcome.takeover > outcome.staleResult.token).toBe(true)
    const write = outcome.staleResult.write
    expect(Exit.isFailure(write) && JSON.stringify(write.cause)).toContain("LeaseLost")
    expect(await probeValues()).toEqual([1, 3])
  })

  it("tokens only grow across release and re-acquisition", async () => {
    const tokens = await h.app.run(
      Effect.gen(function* () {
        const lease = yield* SyncLease
        const out: Array<bigint> = []
        for (let i = 0; i < 3; i++) out.push(yield* lease.withLease(h.scope, Effect.map(LeaseFence, (f) => f.token)))
        return out
      })
    )
    expect(tokens[1]! > tokens[0]! && tokens[2]! > tokens[1]!).toBe(true)
  })
})

describe("split brain", () => {
  let h: SyncHarness
  beforeAll(async () => {
    h = await startSyncHarness({ env: { FLEXPRICE_SYNC_LEASE_SECONDS: "60" } })
  })
  afterAll(async () => {
    await h?.dispose()
  })

  it("a replica paused between planning and its window pass cannot bill the window again after a takeover", async () => {
    await h.configure()
    await h.meter("tokens", { aggregation: "SUM", field: "t" })
    const c = await h.customer("sb")
    const quantities = ["2.5", "7", "0.125"]
    await h.ingest(quantities.map((q, i) => ({ event_id: `sb${i}`, event_name: "tokens", external_customer_id: "sb", timestamp: hoursAgo(3, i), properties: { t: q } })))
    const outcome = await h.asTenant(
      Effect.gen(function* () {
        const lease = yield* SyncLease
        const pipeline = yield* SyncPipeline
        const service = yield* SyncService
        const sql = yield* PgClient.PgClient
        const config = (yield* Effect.flatMap(StripeConfigRepo, (r) => r.get)).pipe((o) => (o._tag === "Some" ? o.value : undefined))!
        const paused = yield* Deferred.make<void>()
        const wake = yield* Deferred.make<void>()
        let first = true
        const hook = {
          beforePass: () =>
            Effect.suspend(() => {
              if (!first) return Effect.void
              first = false
              return Effect.zipRight(Deferred.succeed(paused, undefined), Deferred.await(wake))
            })
        }
        // replica A plans the window, then stalls (GC pause, stopped VM) with its lease running out
        const stale = yield* Effect.fork(
          lease.withLease(h.scope, pipeline.run(config, { trigger: "schedule" })).pipe(Effect.provideService(WindowPassHook, hook), Effect.exit)
        )
        yield* Deferred.await(paused)
        yield* sql`UPDATE sync_leases SET expires_at = now() - interval '1 second'
          WHERE tenant_id = ${h.scope.tenantId} AND environment_id = ${h.scope.environmentId}`
        // replica B takes over and syncs the window
        const b = yield* service.runTenant(config, { trigger: "schedule" }).pipe(Effect.provideService(CurrentTenant, h.scope))
        yield* Deferred.succeed(wake, undefined)
        return { a: yield* Fiber.join(stale), b }
      })
    )
    expect(outcome.b.batchesSynced).toBe(1)
    expect(Exit.isFailure(outcome.a) && JSON.stringify(outcome.a.cause)).toContain("LeaseLost")
    expect(h.stripeTotal(c.stripeId!, "stripe_tokens")).toBe(O.format(O.sum(quantities)))
    const batches = await h.batches()
    expect(batches.filter((b) => b.syncStatus !== "skipped").length).toBe(1)
  })
})

// Two app instances (replicas) on one real PostgreSQL database, one Stripe emulator: the lease row
// is all that keeps them from syncing the same tenant at once.
forEachBackend(["postgres"], () => describe("sync lease across replicas (PostgreSQL, two app instances)", () => {
  let a: SyncHarness
  let b: TestApp
  let drop: () => Promise<void>
  beforeAll(async () => {
    const db = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
    drop = db.drop
    // replicas share the database and the master keys
    const keys = `1:${randomBytes(32).toString("base64")}`
    const env = { FLEXPRICE_SYNC_LEASE_SECONDS: "60", FLEXPRICE_ENCRYPTION_KEYS: keys }
    a = await startSyncHarness({ backend: "postgres", databaseUrl: db.url, env })
    b = await startTestApp({ backend: "postgres", databaseUrl: db.url, env: { ...stripeEnv(a.emulator.url), ...env } })
  }, 120_000)
  afterAll(async () => {
    await b?.dispose()
    await a?.dispose()
    await drop?.()
  })

  const configOf = (app: TestApp) =>
    app.run(
      Effect.flatMap(StripeConfigRepo, (r) => r.get).pipe(
        Effect.map((o) => (o._tag === "Some" ? o.value : undefined)!),
        Effect.provideService(CurrentTenant, a.scope)
      )
    )
  const runOn = (app: TestApp) =>
    configOf(app).then((config) =>
      app.run(
        Effect.flatMap(SyncService, (s) => s.runTenant(config, { trigger: "schedule" })).pipe(Effect.provideService(CurrentTenant, a.scope), Effect.either)
      )
    )

  it("replica B is refused the lease replica A holds, and takes it once A released it", async () => {
    const inside = await a.app.run(Deferred.make<void>())
    const letGo = await a.app.run(Deferred.make<void>())
    const holder = a.app.run(Effect.flatMap(SyncLease, (l) => l.withLease(a.scope, Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(letGo)))))
    await a.app.run(Deferred.await(inside))
    const busy = await b.run(Effect.exit(Effect.flatMap(SyncLease, (l) => l.withLease(a.scope, Effect.succeed("b")))))
    expect(Exit.isFailure(busy) && JSON.stringify(busy.cause)).toContain("LeaseBusy")
    await a.app.run(Deferred.succeed(letGo, undefined))
    await holder
    expect(await b.run(Effect.flatMap(SyncLease, (l) => l.withLease(a.scope, Effect.succeed("b"))))).toBe("b")
  })

  it("a sync on replica B while A's sync is on the wire is refused; the window is billed once", async () => {
    await a.configure()
    const m = await a.meter("tokens", { aggregation: "SUM", field: "t" })
    const c = await a.customer("r1")
    const quantities = ["0.000000000001", "7", "2.5"]
    await a.ingest(quantities.map((q, i) => ({ event_id: `r${i}`, event_name: "tokens", external_customer_id: "r1", timestamp: hoursAgo(3, i), properties: { t: q } })))
    // A's stream request is held after Stripe applied it: A is mid-sync, holding the lease
    a.emulator.holdNext((r) => r.method === "POST" && r.path.startsWith("/v2/billing/meter_event_stream"), { applyFirst: true })
    const onA = runOn(a.app)
    await Effect.runPromise(a.emulator.awaitHeld(1).pipe(Effect.timeout("60 seconds")))
    const onB = await runOn(b)
    expect(onB._tag === "Left" && onB.left._tag).toBe("LeaseBusy")
    await Effect.runPromise(a.emulator.release())
    const doneA = await onA
    expect(doneA._tag === "Right" && [doneA.right.status, doneA.right.batchesSynced]).toEqual(["completed", 1])
    // B afterwards: nothing left to send
    const again = await runOn(b)
    expect(again._tag === "Right" && [again.right.batchesCreated, again.right.stripeRequests]).toEqual([0, 0])
    expect(a.stripeTotal(c.stripeId!, m.stripeEventName)).toBe(O.format(O.sum(quantities)))
    const received = a.emulator.state.received()
    expect(received.map((r) => r.outcome)).toEqual(["accepted"])
  })
}))

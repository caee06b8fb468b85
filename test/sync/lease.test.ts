/**
 * The per-tenant lease (sync_leases): one holder at a time across fibers (and, by the same row,
 * replicas), released after use, taken over once expired, and a manual sync waits for / is
 * refused by a running one. On PostgreSQL also across two app instances (replicas) sharing one
 * database.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { DateTime, Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { expect } from "vitest"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { checkFence, LeaseFence, SyncLease } from "../../src/sync/SyncLease.js"
import { SyncPipeline } from "../../src/sync/SyncPipeline.js"
import { SyncService } from "../../src/sync/SyncService.js"
import { WindowPassHook } from "../../src/sync/WindowPass.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, inTestTenant, Replica, rows, TestTenant } from "../support/TestApp.js"
import { FILE_HOUR, HOUR, hoursAgo } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, SyncEmulator, syncLayer } from "./syncLayer.js"

/** The test tenant's scope (the lease's key). */
const tenantScope = Effect.map(TestTenant, (t) => t.scope)

/** The test tenant's stored Stripe config, on the services `run` gives (the layer's own by default). */
const storedConfig = inTestTenant(
  Effect.flatMap(StripeConfigRepo, (r) => r.get).pipe(Effect.flatMap((o) => (o._tag === "Some" ? Effect.succeed(o.value) : Effect.dieMessage("not configured"))))
)

// On PostgreSQL (when FLEXPRICE_TEST_POSTGRES_URL is set) the lease row lives on a real server,
// where replicas would share it; PGlite is the embedded single-process case.
forEachBackend(["pglite", "postgres"], (backend) =>
  layer(syncLayer({ backend, env: { FLEXPRICE_SYNC_LEASE_SECONDS: "2" } }), { excludeTestServices: true })(`sync lease (${backend})`, (it) => {
    it.effect("admits one holder at a time and frees the lease after use", () =>
      Effect.gen(function* () {
        const scope = yield* tenantScope
        const lease = yield* SyncLease
        const inside = yield* Deferred.make<void>()
        const done = yield* Deferred.make<void>()
        const first = yield* Effect.fork(lease.withLease(scope, Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(done))))
        yield* Deferred.await(inside)
        const second = yield* Effect.exit(lease.withLease(scope, Effect.succeed("second")))
        yield* Deferred.succeed(done, undefined)
        yield* Fiber.join(first)
        const third = yield* lease.withLease(scope, Effect.succeed("third"))
        expect(Exit.isFailure(second) && JSON.stringify(second.cause)).toContain("LeaseBusy")
        expect(third).toBe("third")
      })
    )

    it.effect("a dead holder's lease is taken over after it expires", () =>
      Effect.gen(function* () {
        const scope = yield* tenantScope
        const sql = yield* PgClient.PgClient
        // a replica that died: its row stays, nobody renews it
        yield* sql`INSERT INTO sync_leases (tenant_id, environment_id, owner, expires_at)
          VALUES (${scope.tenantId}, ${scope.environmentId}, 'dead-replica', now() + interval '1 second')
          ON CONFLICT (tenant_id, environment_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at`
        const lease = yield* SyncLease
        const busy = yield* Effect.exit(lease.withLease(scope, Effect.succeed(1)))
        expect(Exit.isFailure(busy) && JSON.stringify(busy.cause)).toContain("LeaseBusy")
        expect(yield* lease.withLease(scope, Effect.succeed(2), { wait: "5 seconds" })).toBe(2)
      })
    )

    it.effect("manual sync waits for a running sync of the same tenant, then runs", () =>
      Effect.gen(function* () {
        const scope = yield* tenantScope
        yield* configure()
        yield* meter("tokens", { aggregation: "SUM", field: "t" })
        const c = yield* customer("a")
        yield* ingest([{ event_id: "1", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(3), properties: { t: "2" } }])
        const hourStart = new Date(FILE_HOUR - 3 * HOUR).toISOString() // the hour hoursAgo(3) names
        const hourEnd = new Date(Date.parse(hourStart) + 3_600_000).toISOString()
        // a running sync: holds the lease for a while, and says when it is inside and when it ends
        const inside = yield* Deferred.make<void>()
        let holderDone = false
        const holder = yield* Effect.fork(
          Effect.flatMap(SyncLease, (l) =>
            l.withLease(
              scope,
              Deferred.succeed(inside, undefined).pipe(
                Effect.zipRight(Effect.sleep("1500 millis")),
                Effect.tap(() => Effect.sync(() => void (holderDone = true)))
              )
            )
          )
        )
        yield* Deferred.await(inside)
        const [res, response] = yield* (yield* ApiClient).sync.manual({ payload: { window_start: DateTime.unsafeMake(hourStart), window_end: DateTime.unsafeMake(hourEnd), dry_run: false }, withResponse: true })
        const answeredAfterHolder = holderDone
        yield* Fiber.join(holder)
        expect(response.status).toBe(200)
        expect(answeredAfterHolder).toBe(true) // it waited for the running sync instead of running beside it
        expect(res.batches_synced).toBe(1)
        expect(yield* stripeTotal(c.stripeId, "stripe_tokens")).toBe("2")
      })
    )
  })
)

const probeWrite = (v: number) =>
  Effect.flatMap(PgClient.PgClient, (sql) => sql.withTransaction(Effect.zipRight(checkFence, sql`INSERT INTO fence_probe (v) VALUES (${v})`)))
const probeValues = Effect.map(rows("SELECT v FROM fence_probe ORDER BY v"), (rs) => rs.map((r) => r["v"]))

// A long TTL: the renewal fiber (every TTL/3) must not fire while a test holds the lease, so the
// takeover below is only seen by the fence, as for a holder whose whole process was paused.
const fencing = Layer.effectDiscard(rows("CREATE TABLE fence_probe (v int NOT NULL)")).pipe(
  Layer.provideMerge(syncLayer({ env: { FLEXPRICE_SYNC_LEASE_SECONDS: "60" } }))
)

layer(fencing, { excludeTestServices: true })("sync lease fencing", (it) => {
  it.effect("a holder paused past its lease cannot commit after another owner took over; the new owner can", () =>
    Effect.gen(function* () {
      const scope = yield* tenantScope
      const lease = yield* SyncLease
      const sql = yield* PgClient.PgClient
      const paused = yield* Deferred.make<void>()
      const wake = yield* Deferred.make<void>()
      const stale = yield* Effect.fork(
        lease.withLease(
          scope,
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
        WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`
      const takeover = yield* lease.withLease(
        scope,
        Effect.gen(function* () {
          yield* probeWrite(3)
          return (yield* LeaseFence).token
        })
      )
      yield* Deferred.succeed(wake, undefined)
      const staleResult = yield* Fiber.join(stale)
      expect(takeover > staleResult.token).toBe(true)
      const write = staleResult.write
      expect(Exit.isFailure(write) && JSON.stringify(write.cause)).toContain("LeaseLost")
      expect(yield* probeValues).toEqual([1, 3])
    })
  )

  it.effect("tokens only grow across release and re-acquisition", () =>
    Effect.gen(function* () {
      const scope = yield* tenantScope
      const lease = yield* SyncLease
      const tokens: Array<bigint> = []
      for (let i = 0; i < 3; i++) tokens.push(yield* lease.withLease(scope, Effect.map(LeaseFence, (f) => f.token)))
      expect(tokens[1]! > tokens[0]! && tokens[2]! > tokens[1]!).toBe(true)
    })
  )
})

layer(syncLayer({ env: { FLEXPRICE_SYNC_LEASE_SECONDS: "60" } }), { excludeTestServices: true })("split brain", (it) => {
  it.effect("a replica paused between planning and its window pass cannot bill the window again after a takeover", () =>
    Effect.gen(function* () {
      const scope = yield* tenantScope
      yield* configure()
      yield* meter("tokens", { aggregation: "SUM", field: "t" })
      const c = yield* customer("sb")
      const quantities = ["2.5", "7", "0.125"]
      yield* ingest(quantities.map((q, i) => ({ event_id: `sb${i}`, event_name: "tokens", external_customer_id: "sb", timestamp: hoursAgo(3, i), properties: { t: q } })))
      const outcome = yield* inTestTenant(
        Effect.gen(function* () {
          const lease = yield* SyncLease
          const pipeline = yield* SyncPipeline
          const service = yield* SyncService
          const sql = yield* PgClient.PgClient
          const config = yield* storedConfig
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
            lease.withLease(scope, pipeline.run(config, { trigger: "schedule" })).pipe(Effect.provideService(WindowPassHook, hook), Effect.exit)
          )
          yield* Deferred.await(paused)
          yield* sql`UPDATE sync_leases SET expires_at = now() - interval '1 second'
            WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`
          // replica B takes over and syncs the window
          const b = yield* service.runTenant(config, { trigger: "schedule" }).pipe(Effect.provideService(CurrentTenant, scope))
          yield* Deferred.succeed(wake, undefined)
          return { a: yield* Fiber.join(stale), b }
        })
      )
      expect(outcome.b.batchesSynced).toBe(1)
      expect(Exit.isFailure(outcome.a) && JSON.stringify(outcome.a.cause)).toContain("LeaseLost")
      expect(yield* stripeTotal(c.stripeId, "stripe_tokens")).toBe(O.format(O.sum(quantities)))
      expect((yield* batches).filter((b) => b.syncStatus !== "skipped").length).toBe(1)
    })
  )
})

// Two app instances (replicas) on one real PostgreSQL database, one Stripe emulator: the lease row
// is all that keeps them from syncing the same tenant at once. Replica A is the layer's service,
// B is TestApp.replica (A's settings: database, master keys, Stripe bases, lease TTL).
forEachBackend(["postgres"], () =>
  layer(TestApp.replica.pipe(Layer.provideMerge(syncLayer({ backend: "postgres", env: { FLEXPRICE_SYNC_LEASE_SECONDS: "60" } }))), {
    excludeTestServices: true,
    timeout: 120_000
  })("sync lease across replicas (PostgreSQL, two app instances)", (it) => {
    /** A scheduled sync of the test tenant on the services given, its failure kept. */
    const runTenant = Effect.flatMap(storedConfig, (config) =>
      inTestTenant(Effect.flatMap(SyncService, (s) => s.runTenant(config, { trigger: "schedule" })))
    ).pipe(Effect.either)

    it.effect("replica B is refused the lease replica A holds, and takes it once A released it", () =>
      Effect.gen(function* () {
        const scope = yield* tenantScope
        const b = yield* Replica
        const inside = yield* Deferred.make<void>()
        const letGo = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(Effect.flatMap(SyncLease, (l) => l.withLease(scope, Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(letGo)))))
        yield* Deferred.await(inside)
        const busy = yield* b.run(Effect.exit(Effect.flatMap(SyncLease, (l) => l.withLease(scope, Effect.succeed("b")))))
        expect(Exit.isFailure(busy) && JSON.stringify(busy.cause)).toContain("LeaseBusy")
        yield* Deferred.succeed(letGo, undefined)
        yield* Fiber.join(holder)
        expect(yield* b.run(Effect.flatMap(SyncLease, (l) => l.withLease(scope, Effect.succeed("b"))))).toBe("b")
      })
    )

    it.effect("a sync on replica B while A's sync is on the wire is refused; the window is billed once", () =>
      Effect.gen(function* () {
        const b = yield* Replica
        const emulator = yield* SyncEmulator
        const tenant = yield* TestTenant
        const onB = b.run(Effect.provideService(runTenant, TestTenant, tenant))
        yield* configure()
        const m = yield* meter("tokens", { aggregation: "SUM", field: "t" })
        const c = yield* customer("r1")
        const quantities = ["0.000000000001", "7", "2.5"]
        yield* ingest(quantities.map((q, i) => ({ event_id: `r${i}`, event_name: "tokens", external_customer_id: "r1", timestamp: hoursAgo(3, i), properties: { t: q } })))
        // A's stream request is held after Stripe applied it: A is mid-sync, holding the lease
        emulator.holdNext((r) => r.method === "POST" && r.path.startsWith("/v2/billing/meter_event_stream"), { applyFirst: true })
        const onA = yield* Effect.fork(runTenant)
        yield* emulator.awaitHeld(1).pipe(Effect.timeout("60 seconds"))
        const refused = yield* onB
        expect(refused._tag === "Left" && refused.left._tag).toBe("LeaseBusy")
        yield* emulator.release()
        const doneA = yield* Fiber.join(onA)
        expect(doneA._tag === "Right" && [doneA.right.status, doneA.right.batchesSynced]).toEqual(["completed", 1])
        // B afterwards: nothing left to send
        const again = yield* onB
        expect(again._tag === "Right" && [again.right.batchesCreated, again.right.stripeRequests]).toEqual([0, 0])
        expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe(O.format(O.sum(quantities)))
        expect(emulator.state.received().map((r) => r.outcome)).toEqual(["accepted"])
      })
    )
  })
)

/**
 * Stripe customer migration end to end, over HTTP, against the emulator's 2,500-customer account
 * (duplicates, customers without external_id, conflicts with existing mappings), on PGlite and
 * PostgreSQL: exact counts, dry run, one job per environment, interruption + restart, pending
 * events, rollback, verify.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { forEachBackend, type Backend } from "../support/app.js"
import {
  type App,
  type Database,
  type Dataset,
  EXPECTED,
  encryptionEnv,
  freshDatabase,
  newTenant,
  seedStripe,
  seedTenant,
  startApp,
  startEmulator,
  stripeEnv,
  tenantState,
  type TenantState,
  rollbackAndWait,
  waitForTask,
  waitForMigration
} from "./support.js"

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`stripe customer migration on ${backend}`, () => {
    let emulator: StripeEmulatorHandle
    let closeEmulator: () => Promise<void>
    let data: Dataset
    let db: Database
    let env: Record<string, string>
    let app: App
    type Tenant = Awaited<ReturnType<typeof newTenant>>
    let a: Tenant // uninterrupted run
    let b: Tenant // interrupted and resumed
    let c: Tenant // dry run
    let baselineA: TenantState | undefined
    let migrationA = ""

    const seeded = async (name: string) => {
      const t = await newTenant(app, name)
      await app.run(seedTenant(t.scope, data, emulator))
      return t
    }
    const start = (t: Tenant, body: unknown = {}) => app.request(t.apiKey, "POST", "/v1/stripe/migrate/customers", body)

    beforeAll(async () => {
      ;({ emulator, close: closeEmulator } = await startEmulator())
      data = await seedStripe(emulator)
      db = await freshDatabase(backend)
      // No pause proportional to each chunk's time (JobGate): it leaves the database to requests,
      // and the only requests here are status polls; it would double every job's wall time.
      env = { ...stripeEnv(emulator.url), ...encryptionEnv(), FLEXPRICE_MIGRATION_CHUNK_PAUSE_PERCENT: "0" }
      app = await startApp(db, env)
      a = await seeded("a")
      b = await seeded("b")
      c = await seeded("c")
    })
    afterAll(async () => {
      await app?.dispose()
      await db?.drop()
      await closeEmulator?.()
    })

    it("maps every Stripe customer with exact counts and processes events that waited for their customer", async () => {
      // events for a customer that only the migration will create
      await app.request(a.apiKey, "POST", "/v1/meters", { name: "calls", event_name: "api_call", aggregation: { type: "COUNT" } })
      const ingest = await app.request(a.apiKey, "POST", "/v1/events/bulk", {
        events: [1, 2, 3].map((n) => ({ event_id: `pending-${n}`, event_name: "api_call", external_customer_id: "ext-0500", properties: {} }))
      })
      expect(ingest.status).toBe(202)
      const pendingBefore = await app.request(a.apiKey, "GET", "/v1/events?external_customer_id=ext-0500")
      expect(pendingBefore.data.events.map((e) => e.status)).toEqual(["pending", "pending", "pending"])
      const before = await app.run(tenantState(a.scope))

      const started = await start(a)
      expect(started.status).toBe(202)
      expect(started.data.migration_id).toMatch(/^mig_/)
      migrationA = started.data.migration_id
      const done = await waitForMigration(app, a.apiKey, migrationA)
      expect(done.status).toBe("completed")
      expect(done.counts).toEqual(EXPECTED)
      expect(done.progress.pages).toBe(25)
      expect(done.problems_total).toBe(EXPECTED.conflicts + EXPECTED.missing_external_id)
      expect(done.problems).toHaveLength(100)
      for (const p of done.problems) expect(p.stripe_customer_id).toMatch(/^cus_/)
      const pcConflict = done.problems.find((p) => p.code === "conflict" && p.external_id?.startsWith("pc-"))
      expect(pcConflict?.conflict_with?.stripe_customer_id).toMatch(/^cus_elsewhere/)

      const after = await app.run(tenantState(a.scope))
      // every unique external id has a customer; nothing else was created
      expect(after.customers.length).toBe(before.customers.length + EXPECTED.created)
      const activeMigration = after.mappings.filter((m) => m.endsWith(":active:migration"))
      expect(activeMigration).toHaveLength(EXPECTED.mapped)
      // the duplicate pair maps to exactly one of its two Stripe customers (the newest, listed first)
      const pair = data.byExternal.get("ext-0042")!
      expect(after.mappings.filter((m) => m.startsWith("ext-0042→"))).toEqual([`ext-0042→${pair[1]}:active:migration`])
      // pre-existing mappings untouched
      expect(after.mappings.filter((m) => m.startsWith("pc-"))).toEqual(before.mappings.filter((m) => m.startsWith("pc-")))
      expect(after.mappings.filter((m) => m.startsWith("am-"))).toEqual(before.mappings.filter((m) => m.startsWith("am-")))

      const events = await app.request(a.apiKey, "GET", "/v1/events?external_customer_id=ext-0500")
      expect(events.data.events.map((e) => e.status)).toEqual(["processed", "processed", "processed"])
      expect(new Set(events.data.events.map((e) => e.customer_id)).size).toBe(1)

      // a second run changes nothing: everything is already mapped or still conflicting
      const again = await start(a)
      const second = await waitForMigration(app, a.apiKey, again.data.migration_id)
      expect(second.counts).toEqual({ ...EXPECTED, mapped: 0, created: 0, already_mapped: EXPECTED.mapped + EXPECTED.already_mapped })
      expect(await app.run(tenantState(a.scope))).toEqual(after)
      baselineA = after

      const list = await app.request(a.apiKey, "GET", "/v1/stripe/migrate")
      expect(list.data.migrations.map((m) => m.migration_id)).toEqual([again.data.migration_id, migrationA])
    })

    it("dry run reports the same counts and writes no customer and no mapping", async () => {
      const before = await app.run(tenantState(c.scope))
      const started = await start(c, { dry_run: true })
      expect(started.status).toBe(202)
      const done = await waitForMigration(app, c.apiKey, started.data.migration_id)
      expect(done.status).toBe("completed")
      expect(done.dry_run).toBe(true)
      expect(done.counts).toEqual(EXPECTED)
      expect(await app.run(tenantState(c.scope))).toEqual(before)
      // rollback of a dry run removes nothing
      const rb = await rollbackAndWait(app, c.apiKey, started.data.migration_id)
      expect(rb.status).toBe(202)
      expect(rb.body).toMatchObject({ status: "completed", result: { mappings_removed: 0, customers_removed: 0 } })
      expect(await app.run(tenantState(c.scope))).toEqual(before)
    })

    it("runs one migration per environment, and a job stopped after k pages resumes to the uninterrupted state", async () => {
      expect(baselineA).toBeDefined()
      // slow Stripe pages so the service can be stopped mid-run
      await Effect.runPromise(emulator.setFaults({ latencyMs: 150, paths: ["/v1/customers"] }))
      const started = await start(b)
      expect(started.status).toBe(202)
      const id = started.data.migration_id
      const second = await start(b, { dry_run: true })
      expect(second.status).toBe(409)
      expect(second.error).toMatchObject({ code: "migration_running", details: { running_id: id } })
      for (;;) {
        const s = await app.request(b.apiKey, "GET", `/v1/stripe/migrate/status/${id}`)
        if (s.data.progress.pages >= 4) break
        await new Promise((r) => setTimeout(r, 20))
      }
      await app.dispose() // a shutdown in the middle of page k+1
      emulator.resetFaults()

      // The job was stopped unfinished: the restarted service's first Stripe request of the
      // resumed job is held, so no page can complete before its state is read.
      emulator.holdNext((r) => r.method === "GET" && r.path.startsWith("/v1/customers"))
      app = await startApp(db, env)
      const stopped = await app.request(b.apiKey, "GET", `/v1/stripe/migrate/status/${id}`)
      expect(stopped.data.status).toBe("running")
      expect(stopped.data.progress.pages).toBeGreaterThanOrEqual(4)
      expect(stopped.data.progress.pages).toBeLessThan(25)
      await Effect.runPromise(emulator.awaitHeld(1).pipe(Effect.timeout("60 seconds"))) // it did resume
      await Effect.runPromise(emulator.release())
      const done = await waitForMigration(app, b.apiKey, id)
      expect(done.status).toBe("completed")
      expect(done.progress.pages).toBe(25)
      expect(done.counts).toEqual(EXPECTED)
      const state = await app.run(tenantState(b.scope))
      expect(state).toEqual(baselineA)
    })

    it("rolls back what it created, restores nothing else, and keeps customers that have usage", async () => {
      const t = await seeded("rb")
      const before = await app.run(tenantState(t.scope))
      await app.request(t.apiKey, "POST", "/v1/meters", { name: "calls", event_name: "api_call", aggregation: { type: "COUNT" } })
      const started = await start(t, { conflict_strategy: "overwrite" })
      const done = await waitForMigration(app, t.apiKey, started.data.migration_id)
      expect(done.status).toBe("completed")
      // overwrite: the pc- conflicts and the duplicates replace the mapping in the way
      expect(done.counts).toMatchObject({ conflicts: 0, mapped: EXPECTED.mapped + EXPECTED.conflicts })
      const migrated = await app.run(tenantState(t.scope))
      expect(migrated.mappings.filter((m) => m.startsWith("pc-")).every((m) => m.endsWith(":active:migration"))).toBe(true)

      // usage after the migration for one created customer
      await app.request(t.apiKey, "POST", "/v1/events", { event_id: "usage-1", event_name: "api_call", external_customer_id: "ext-0700" })
      const rb = await rollbackAndWait(app, t.apiKey, started.data.migration_id)
      expect(rb.status).toBe(202)
      expect(rb.body).toMatchObject({ kind: "rollback", status: "completed", error: null })
      expect(rb.job.progress.done).toBe(rb.job.progress.total)
      expect(rb.job.result.customers_kept).toEqual([expect.objectContaining({ external_id: "ext-0700", reason: "has_events" })])
      expect(rb.job.result.customers_removed).toBe(EXPECTED.created - 1)
      expect(rb.job.result.mappings_restored).toBe(100)

      const after = await app.run(tenantState(t.scope))
      expect(after.mappings).toEqual(before.mappings)
      expect(after.customers).toEqual([...before.customers, "ext-0700"].sort())
      const status = await app.request(t.apiKey, "GET", `/v1/stripe/migrate/status/${started.data.migration_id}`)
      expect(status.data.status).toBe("rolled_back")
      expect(status.data.rollback).toMatchObject({ customers_removed: EXPECTED.created - 1 })
      const twice = await app.request(t.apiKey, "POST", `/v1/stripe/migrate/${started.data.migration_id}/rollback`)
      expect(twice.status).toBe(409)
      expect(twice.error.code).toBe("already_rolled_back")
    }, 180_000) // background tasks over 2,150 mappings and 1,950 customers

    it("fail strategy stops at the first conflict; unknown ids are 404; other tenants see nothing", async () => {
      const t = await seeded("fail")
      const started = await start(t, { conflict_strategy: "fail", create_missing_customers: false })
      const done = await waitForMigration(app, t.apiKey, started.data.migration_id)
      expect(done.status).toBe("failed")
      expect(done.error).toMatch(/^conflict: /)
      expect(done.counts.conflicts).toBe(1)
      expect(done.counts.seen).toBeLessThan(EXPECTED.seen)
      expect((await app.request(t.apiKey, "GET", "/v1/stripe/migrate/status/mig_nope")).status).toBe(404)
      expect((await app.request(a.apiKey, "GET", `/v1/stripe/migrate/status/${started.data.migration_id}`)).status).toBe(404)
      const notConfigured = await newTenant(app, "none")
      const refused = await start(notConfigured)
      expect(refused.status).toBe(400)
      expect(refused.error.code).toBe("stripe_not_configured")
    })

    it("verify lists mappings whose Stripe customer changed or disappeared", async () => {
      expect(migrationA).not.toBe("")
      // the first GET starts a verification in the background; its task shows the progress
      const first = await app.request(a.apiKey, "GET", `/v1/stripe/migrate/${migrationA}/verify`)
      expect(first.status).toBe(200)
      expect(first.body).toMatchObject({ kind: "verify", migration_id: migrationA, progress: { total: EXPECTED.mapped } })
      const okTask = await waitForTask(app, a.apiKey, first.data.task_id)
      expect(okTask).toMatchObject({ status: "completed", progress: { done: EXPECTED.mapped }, result: { checked: EXPECTED.mapped, ok: EXPECTED.mapped, mismatches: [] } })
      const ok = await app.request(a.apiKey, "GET", `/v1/stripe/migrate/${migrationA}/verify`)
      expect(ok.body).toMatchObject({ task_id: first.data.task_id, status: "completed", checked: EXPECTED.mapped, ok: EXPECTED.mapped, mismatches: [] })
      const [changed] = data.byExternal.get("ext-0300")!
      const [deleted] = data.byExternal.get("ext-0301")!
      await Effect.runPromise(emulator.updateCustomer(changed!, { metadata: { external_id: "someone-else" } }))
      await Effect.runPromise(emulator.deleteCustomer(deleted!))
      const again = await app.request(a.apiKey, "POST", `/v1/stripe/migrate/${migrationA}/verify`)
      expect(again.status).toBe(202)
      await waitForTask(app, a.apiKey, again.data.task_id)
      const res = await app.request(a.apiKey, "GET", `/v1/stripe/migrate/${migrationA}/verify`)
      expect(res.body).toMatchObject({ task_id: again.data.task_id, status: "completed", mismatches_total: 2 })
      expect(res.data.checked).toBe(EXPECTED.mapped)
      expect(res.data.mismatches.map((m) => [m.external_id, m.problem]).sort()).toEqual([
        ["ext-0300", "external_id_mismatch"],
        ["ext-0301", "stripe_customer_deleted"]
      ])
    }, 180_000) // background tasks over 2,150 mappings and 1,950 customers
  })
})

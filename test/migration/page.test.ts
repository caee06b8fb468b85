/**
 * One Stripe page that mixes every case, migrated through the HTTP API on PGlite and PostgreSQL:
 * what the job records per Stripe customer (counts, problems in page order, mappings, the
 * entities a rollback removes and the rows it restores) is what the linking rules give when the
 * customers are taken one by one in page order — new, already mapped, external_id mapped to
 * another Stripe customer, Stripe customer mapped to another external_id, no external_id, an
 * existing unmapped customer, and two Stripe customers with the same external_id in the page.
 */
import { Effect, Option } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { CustomerRepo } from "../../src/repositories/CustomerRepo.js"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { forEachBackend, type Backend } from "../support/app.js"
import {
  type App,
  configureStripe,
  type Database,
  encryptionEnv,
  freshDatabase,
  newTenant,
  startApp,
  startEmulator,
  stripeEnv,
  tenantState,
  rollbackAndWait,
  waitForMigration
} from "./support.js"

/** The page as Stripe lists it (newest first); `ext` undefined = no metadata.external_id. */
const PAGE = [
  { key: "n1", ext: "new-1" },
  { key: "am", ext: "am" },
  { key: "noext", ext: undefined },
  { key: "pc", ext: "pc" },
  { key: "dupA", ext: "dup" },
  { key: "dupB", ext: "dup" },
  { key: "ex", ext: "ex" },
  { key: "thief", ext: "thief" },
  { key: "n2", ext: "new-2" }
] as const
type Key = (typeof PAGE)[number]["key"]

/** With conflict_strategy=skip (the default), real run and dry run alike. */
const SKIP_COUNTS = { seen: 9, mapped: 4, created: 3, already_mapped: 1, conflicts: 3, missing_external_id: 1, customer_missing: 0, failed: 0 }
const SKIP_PROBLEMS = [
  ["noext", "missing_external_id"],
  ["pc", "conflict"],
  ["dupB", "conflict"], // the same external_id earlier in the page took it
  ["thief", "conflict"]
]

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`one mixed Stripe page on ${backend}`, () => {
    let emulator: StripeEmulatorHandle
    let closeEmulator: () => Promise<void>
    let db: Database
    let app: App
    const id = {} as Record<Key, string>

    beforeAll(async () => {
      ;({ emulator, close: closeEmulator } = await startEmulator())
      // created oldest first, so that the list (newest first) is PAGE's order
      for (const p of [...PAGE].reverse()) {
        const c = await Effect.runPromise(emulator.createCustomer({ name: p.key, ...(p.ext !== undefined ? { metadata: { external_id: p.ext } } : {}) }))
        id[p.key] = c.id
      }
      db = await freshDatabase(backend)
      app = await startApp(db, { ...stripeEnv(emulator.url), ...encryptionEnv() })
    })
    afterAll(async () => {
      await app?.dispose()
      await db?.drop()
      await closeEmulator?.()
    })

    /** am mapped to its Stripe customer, pc to another one, ex unmapped, owner holding thief's Stripe customer. */
    const seeded = async (name: string) => {
      const t = await newTenant(app, name)
      await app.run(configureStripe(t.scope, emulator))
      await app.run(
        Effect.gen(function* () {
          const customers = yield* CustomerRepo
          const mappings = yield* CustomerMappingRepo
          const mapped = (externalId: string, stripe: string) =>
            Effect.flatMap(customers.insert({ externalId }), (c) =>
              mappings.insert({ customerId: Option.getOrThrow(c).id, providerCustomerId: stripe, source: "api" })
            )
          yield* mapped("am", id.am)
          yield* mapped("pc", "cus_elsewhere")
          yield* mapped("owner", id.thief)
          yield* customers.insert({ externalId: "ex" })
        }).pipe(Effect.provideService(CurrentTenant, t.scope))
      )
      return t
    }
    const migrate = async (t: { apiKey: string }, body: unknown) => {
      const started = await app.request(t.apiKey, "POST", "/v1/stripe/migrate/customers", body)
      expect(started.status).toBe(202)
      return waitForMigration(app, t.apiKey, started.data.migration_id)
    }
    const problemsOf = (job: { readonly problems: ReadonlyArray<{ readonly stripe_customer_id?: string | null; readonly code: string }> }) => job.problems.map((p) => [Object.entries(id).find(([, v]) => v === p.stripe_customer_id)?.[0], p.code])
    const mappingsOf = async (scope: TenantScope) =>
      (await app.run(tenantState(scope))).mappings.map((m) => m.replace(/cus_\w+/, (s) => Object.entries(id).find(([, v]) => v === s)?.[0] ?? s))

    it("skip: every customer gets the outcome of linking one by one, and a rollback undoes exactly what it made", async () => {
      const t = await seeded("skip")
      const before = await app.run(tenantState(t.scope))
      const job = await migrate(t, {})
      expect(job.status).toBe("completed")
      expect(job.progress.pages).toBe(1)
      expect(job.counts).toEqual(SKIP_COUNTS)
      expect(problemsOf(job)).toEqual(SKIP_PROBLEMS)
      expect(job.problems[2]!.conflict_with).toEqual({ stripe_customer_id: id.dupA })
      expect(job.problems[3]!.conflict_with).toMatchObject({ customer_id: expect.stringMatching(/^cust_/) })
      expect(await mappingsOf(t.scope)).toEqual([
        "am→am:active:api",
        "dup→dupA:active:migration",
        "ex→ex:active:migration",
        "new-1→n1:active:migration",
        "new-2→n2:active:migration",
        "owner→thief:active:api",
        "pc→cus_elsewhere:active:api"
      ])

      const rb = await rollbackAndWait(app, t.apiKey, job.migration_id)
      expect(rb.body).toMatchObject({ status: "completed", result: { mappings_removed: 4, mappings_restored: 0, customers_removed: 3, customers_kept: [] } })
      expect(await app.run(tenantState(t.scope))).toEqual(before)
    })

    it("overwrite: conflicts replace the rows in the way (recorded, and restored by a rollback)", async () => {
      const t = await seeded("overwrite")
      const before = await app.run(tenantState(t.scope))
      const job = await migrate(t, { conflict_strategy: "overwrite" })
      expect(job.status).toBe("completed")
      expect(job.counts).toEqual({ seen: 9, mapped: 7, created: 4, already_mapped: 1, conflicts: 0, missing_external_id: 1, customer_missing: 0, failed: 0 })
      expect(problemsOf(job)).toEqual([
        ["noext", "missing_external_id"],
        ["pc", "overwritten"],
        ["dupB", "overwritten"],
        ["thief", "overwritten"]
      ])
      expect(await mappingsOf(t.scope)).toEqual([
        "am→am:active:api",
        "dup→dupB:active:migration",
        "ex→ex:active:migration",
        "new-1→n1:active:migration",
        "new-2→n2:active:migration",
        "pc→pc:active:migration",
        "thief→thief:active:migration"
      ])

      const rb = await rollbackAndWait(app, t.apiKey, job.migration_id)
      // pc's and owner's rows were reassigned: removed, then restored as they were
      expect(rb.body).toMatchObject({ status: "completed", result: { mappings_restored: 2, customers_removed: 4, customers_kept: [] } })
      expect(await app.run(tenantState(t.scope))).toEqual(before)
    })

    it("dry run: the same counts as the real run, nothing written", async () => {
      const t = await seeded("dry")
      const before = await app.run(tenantState(t.scope))
      const job = await migrate(t, { dry_run: true })
      expect(job.counts).toEqual(SKIP_COUNTS)
      expect(problemsOf(job)).toEqual(SKIP_PROBLEMS)
      expect(await app.run(tenantState(t.scope))).toEqual(before)
    })

    it("fail: stops at the first conflict in the page; customers before it are linked, none after it", async () => {
      const t = await seeded("fail")
      const job = await migrate(t, { conflict_strategy: "fail" })
      expect(job.status).toBe("failed")
      expect(job.error).toBe(`conflict: Stripe customer ${id.pc} (external_id pc) is already mapped differently`)
      expect(job.counts).toEqual({ seen: 4, mapped: 1, created: 1, already_mapped: 1, conflicts: 1, missing_external_id: 1, customer_missing: 0, failed: 0 })
      expect(job.progress.pages).toBe(0)
      const state = await app.run(tenantState(t.scope))
      expect(state.customers).toEqual(["am", "ex", "new-1", "owner", "pc"])
      expect(await mappingsOf(t.scope)).toEqual(["am→am:active:api", "new-1→n1:active:migration", "owner→thief:active:api", "pc→cus_elsewhere:active:api"])
    })

    it("create_missing_customers=false: unknown external_ids are reported, known ones still linked", async () => {
      const t = await seeded("nocreate")
      const job = await migrate(t, { create_missing_customers: false })
      expect(job.counts).toEqual({ seen: 9, mapped: 1, created: 0, already_mapped: 1, conflicts: 1, missing_external_id: 1, customer_missing: 5, failed: 0 })
      expect(problemsOf(job)).toEqual([
        ["n1", "customer_missing"],
        ["noext", "missing_external_id"],
        ["pc", "conflict"],
        ["dupA", "customer_missing"],
        ["dupB", "customer_missing"],
        ["thief", "customer_missing"],
        ["n2", "customer_missing"]
      ])
    })
  })
})

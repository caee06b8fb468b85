/**
 * POST /v1/stripe/migrate/customers/csv over HTTP: 202 with a job whose status shows rows done /
 * total and, once finished, bad rows by line number, good rows applied chunk by chunk,
 * all_or_nothing, conflicts with stored mappings, Stripe existence check, multipart upload, size
 * cap, rollback of an import.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { forEachBackend, type Backend } from "../support/app.js"
import {
  type App,
  type Database,
  encryptionEnv,
  freshDatabase,
  importCsvAndWait,
  newTenant,
  rollbackAndWait,
  seedTenant,
  startApp,
  startEmulator,
  stripeEnv,
  tenantState,
  waitForMigration,
  type CsvQuery
} from "./support.js"

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`CSV mapping import on ${backend}`, () => {
    let emulator: StripeEmulatorHandle
    let closeEmulator: () => Promise<void>
    let db: Database
    let app: App
    let stripeIds: Array<string>

    beforeAll(async () => {
      ;({ emulator, close: closeEmulator } = await startEmulator())
      stripeIds = []
      for (let i = 0; i < 7; i++) stripeIds.push((await Effect.runPromise(emulator.createCustomer({ name: `s${i}` }))).id)
      db = await freshDatabase(backend)
      // Chunks of 2 rows: every file below spans several chunks (transactions).
      app = await startApp(db, { ...stripeEnv(emulator.url), ...encryptionEnv(), FLEXPRICE_MIGRATION_CSV_MAX_BYTES: "20000", FLEXPRICE_MIGRATION_CHUNK_ROWS: "2" })
    })
    afterAll(async () => {
      await app?.dispose()
      await db?.drop()
      await closeEmulator?.()
    })

    const tenant = async () => {
      const t = await newTenant(app, "csv")
      await app.run(seedTenant(t.scope, { byExternal: new Map(), amStripeIds: [stripeIds[6]!], total: 0 }, emulator))
      return t
    }
    const upload = (apiKey: string, csv: string, query: CsvQuery = "") => importCsvAndWait(app, apiKey, csv, query)
    const linesAndCodes = (job: { readonly problems: ReadonlyArray<{ readonly line?: number | null; readonly code: string }> }) => job.problems.map((p) => [p.line, p.code])

    it("answers 202 with a status URL, applies the good rows and lists the bad ones by line number and reason", async () => {
      const t = await tenant()
      const csv = [
        "\uFEFFexternal_id,stripe_customer_id,name,email",
        `new-1,${stripeIds[0]},"Smith, Jane","jane@example.com"`,
        `new-2,not_a_customer,,`,
        `"multi`,
        `line",${stripeIds[1]},,`,
        `pc-001,${stripeIds[2]},,`, // pc-001 is already mapped to cus_elsewhere1 (seeded)
        `ext-1005,${stripeIds[3]},,`, // exists unmapped: mapped, not created
        `am-00,${stripeIds[5]},,`, // am-00 is already mapped to stripeIds[6]
        `,${stripeIds[4]},,`
      ].join("\r\n")
      const res = await upload(t.apiKey, csv)
      expect(res.status).toBe(202)
      expect(res.started).toMatchObject({ status: "running", status_url: `/v1/stripe/migrate/status/${res.job.migration_id}` })
      expect(res.body).toMatchObject({
        kind: "csv",
        status: "completed",
        error: null,
        progress: { rows_done: 7, rows_total: 7 },
        problems_total: 4,
        csv: { applied: true, valid_rows: 3, overwritten: 0, warnings_total: 0 }
      })
      expect(linesAndCodes(res.job)).toEqual([
        [3, "invalid_stripe_customer_id"],
        [6, "conflict"],
        [8, "conflict"],
        [9, "missing_external_id"]
      ])
      expect(res.job.counts).toEqual({ seen: 7, mapped: 3, created: 2, already_mapped: 0, conflicts: 2, missing_external_id: 1, customer_missing: 0, failed: 1 })
      const state = await app.run(tenantState(t.scope))
      expect(state.mappings).toContain(`new-1→${stripeIds[0]}:active:csv`)
      expect(state.mappings).toContain(`multi\r\nline→${stripeIds[1]}:active:csv`)
      expect(state.mappings).toContain(`ext-1005→${stripeIds[3]}:active:csv`)
      expect(state.mappings).toContain("pc-001→cus_elsewhere1:active:api")

      // rollback (a background task) removes the import's mappings and the customers it created
      const before = state
      const rb = await rollbackAndWait(app, t.apiKey, res.job.migration_id)
      expect(rb.status).toBe(202)
      expect(rb.body).toMatchObject({ kind: "rollback", status: "completed", progress: { done: 5, total: 5 }, result: { mappings_removed: 3, customers_removed: 2 } })
      const after = await app.run(tenantState(t.scope))
      expect(after.customers).toEqual(before.customers.filter((c) => c !== "new-1" && c !== "multi\r\nline"))
      expect(after.mappings.filter((m) => m.endsWith(":csv"))).toEqual([])
      const status = await waitForMigration(app, t.apiKey, res.job.migration_id)
      expect(status).toMatchObject({ status: "rolled_back", rollback: { mappings_removed: 3, customers_removed: 2 } })
    })

    it("all_or_nothing applies nothing when a row is bad; dry_run writes nothing", async () => {
      const t = await tenant()
      const before = await app.run(tenantState(t.scope))
      const csv = `external_id,stripe_customer_id\nok-1,${stripeIds[0]}\nok-2,${stripeIds[1]}\nok-3,${stripeIds[2]}\nbad,sub_1\n`
      const res = await upload(t.apiKey, csv, "?all_or_nothing=true")
      expect(res.body).toMatchObject({ status: "failed", problems_total: 1, csv: { applied: false, valid_rows: 3 } })
      expect(res.job.error).toMatch(/^all_or_nothing: nothing applied because 1 row\(s\) are bad/)
      expect(res.job.problems[0]).toMatchObject({ line: 5, code: "invalid_stripe_customer_id" })
      expect(await app.run(tenantState(t.scope))).toEqual(before)
      const dry = await upload(t.apiKey, `external_id,stripe_customer_id\nok-1,${stripeIds[0]}\n`, "?dry_run=true")
      expect(dry.body).toMatchObject({ status: "completed", dry_run: true, csv: { applied: false }, counts: { mapped: 1, created: 1 } })
      expect(await app.run(tenantState(t.scope))).toEqual(before)
    })

    it("a dry run reports the overwrites and creations the import then makes", async () => {
      const t = await tenant()
      // am-00 is mapped to stripeIds[6] (seeded): moved to stripeIds[0]; ov-new is created and
      // takes stripeIds[1]; stripeIds[6] stays mapped to nobody afterwards
      const csv = `external_id,stripe_customer_id\nam-00,${stripeIds[0]}\nov-new,${stripeIds[1]}\n`
      const expected = { counts: { mapped: 2, created: 1, already_mapped: 0 }, csv: { overwritten: 1 } }
      const dry = await upload(t.apiKey, csv, "?conflict_strategy=overwrite&dry_run=true")
      expect(dry.body).toMatchObject({ problems_total: 0, ...expected, csv: { applied: false, overwritten: 1 } })
      const res = await upload(t.apiKey, csv, "?conflict_strategy=overwrite")
      expect(res.body).toMatchObject({ status: "completed", problems_total: 0, ...expected, csv: { applied: true, overwritten: 1 } })
      const state = await app.run(tenantState(t.scope))
      expect(state.mappings).toContain(`am-00→${stripeIds[0]}:active:csv`)
      expect(state.mappings).toContain(`ov-new→${stripeIds[1]}:active:csv`)
      expect(state.mappings.filter((m) => m.includes(`→${stripeIds[6]}:`))).toEqual([])
      // the same file again changes nothing
      const again = await upload(t.apiKey, csv, "?conflict_strategy=overwrite")
      expect(again.body).toMatchObject({ counts: { mapped: 0, created: 0, already_mapped: 2 }, csv: { applied: true, overwritten: 0 } })
    })

    it("applies rows in file order: an overwrite that frees a Stripe customer lets a later row take it", async () => {
      const t = await tenant()
      // row 2 moves am-00 from stripeIds[6] to stripeIds[0], which frees stripeIds[6] for row 3
      const csv = `external_id,stripe_customer_id\nam-00,${stripeIds[0]}\nchain-1,${stripeIds[6]}\n`
      const res = await upload(t.apiKey, csv, "?conflict_strategy=overwrite")
      expect(res.body).toMatchObject({ status: "completed", problems_total: 0, counts: { mapped: 2, created: 1, already_mapped: 0 }, csv: { applied: true, overwritten: 1 } })
      const state = await app.run(tenantState(t.scope))
      expect(state.mappings).toContain(`am-00→${stripeIds[0]}:active:csv`)
      expect(state.mappings).toContain(`chain-1→${stripeIds[6]}:active:csv`)
    })

    it("an id paired two ways is refused on every line, across chunks; an exact repeat is applied once", async () => {
      const t = await tenant()
      const csv = [
        "external_id,stripe_customer_id",
        `two-way,${stripeIds[0]}`,
        `rep,${stripeIds[1]}`,
        `filler,${stripeIds[2]}`,
        `rep,${stripeIds[1]}`,
        `two-way,${stripeIds[3]}`
      ].join("\n")
      const res = await upload(t.apiKey, csv)
      expect(linesAndCodes(res.job)).toEqual([
        [2, "duplicate_external_id"],
        [6, "duplicate_external_id"]
      ])
      expect(res.job.problems[0].message).toMatch(/on line 6$/)
      expect(res.body).toMatchObject({ counts: { seen: 5, mapped: 2 }, csv: { valid_rows: 2, warnings_total: 1 } })
    })

    it("verify=true refuses Stripe ids that do not exist or were deleted", async () => {
      const t = await tenant()
      await Effect.runPromise(emulator.deleteCustomer(stripeIds[5]!))
      const csv = `external_id,stripe_customer_id\nv-1,${stripeIds[4]}\nv-2,cus_doesnotexist\nv-3,${stripeIds[5]}\n`
      const res = await upload(t.apiKey, csv, "?verify=true")
      expect(linesAndCodes(res.job)).toEqual([
        [3, "stripe_customer_not_found"],
        [4, "stripe_customer_deleted"]
      ])
      expect(res.job.counts.mapped).toBe(1)
    })

    it("accepts multipart uploads, caps the size with 413, rejects a bad header with 400", async () => {
      const t = await tenant()
      const form = new FormData()
      form.append("file", new Blob([`external_id,stripe_customer_id\nmp-1,${stripeIds[4]}\n`], { type: "text/csv" }), "map.csv")
      const mp = await app.request(t.apiKey, "POST", "/v1/stripe/migrate/customers/csv", undefined, { rawBody: form })
      expect(mp.status).toBe(202)
      expect((await waitForMigration(app, t.apiKey, mp.data.migration_id)).counts.mapped).toBe(1)
      const big = "external_id,stripe_customer_id\n" + Array.from({ length: 2000 }, (_, i) => `big-${i},cus_${i}`).join("\n")
      const tooBig = await upload(t.apiKey, big)
      expect(tooBig.status).toBe(413)
      expect(tooBig.error.code).toBe("payload_too_large")
      const header = await upload(t.apiKey, "id,stripe\nx,cus_1\n")
      expect(header.status).toBe(400)
      expect(header.error.code).toBe("invalid_csv_header")
      const list = await app.request(t.apiKey, "GET", "/v1/stripe/migrate")
      expect(list.data.migrations).toHaveLength(1) // nothing stored for the refused uploads
    })
  })
})

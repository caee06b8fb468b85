/**
 * The status a CSV import ends in is what it applied: an import slower than the orphan threshold
 * keeps its claim and ends `completed` with its rows; an import whose process stopped half way is
 * undone by the next runner and ends `failed` with nothing applied.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { type App, type CsvQuery, type Database, encryptionEnv, freshDatabase, newTenant, seedTenant, startApp, startEmulator, stripeEnv, tenantState, waitForMigration } from "./support.js"

describe("CSV import status matches what was applied (pglite)", () => {
  let emulator: StripeEmulatorHandle
  let closeEmulator: () => Promise<void>
  let db: Database
  let env: Record<string, string>
  let app: App
  let stripeIds: Array<string>

  beforeAll(async () => {
    ;({ emulator, close: closeEmulator } = await startEmulator())
    stripeIds = []
    for (let i = 0; i < 6; i++) stripeIds.push((await Effect.runPromise(emulator.createCustomer({ name: `s${i}` }))).id)
    db = await freshDatabase("pglite")
    // A 1 s orphan threshold, scanned every second: any import longer than that must keep its
    // claim. Chunks of 2 rows, so an import commits several times.
    env = {
      ...stripeEnv(emulator.url),
      ...encryptionEnv(),
      FLEXPRICE_MIGRATION_STALE_SECONDS: "1",
      FLEXPRICE_MIGRATION_SCAN_SECONDS: "1",
      FLEXPRICE_MIGRATION_CHUNK_ROWS: "2"
    }
    app = await startApp(db, env)
  })
  afterAll(async () => {
    emulator?.resetFaults()
    await app?.dispose()
    await db?.drop()
    await closeEmulator?.()
  })

  const upload = (apiKey: string, csv: string, query: CsvQuery = "") =>
    app.request(apiKey, "POST", `/v1/stripe/migrate/customers/csv${query}`, undefined, { headers: { "content-type": "text/csv" }, rawBody: csv })
  const csvOf = (prefix: string) => ["external_id,stripe_customer_id", ...stripeIds.map((id, i) => `${prefix}-${i},${id}`)].join("\n")

  it("an import slower than the orphan threshold ends completed with its rows applied", async () => {
    const t = await newTenant(app, "slow")
    await app.run(seedTenant(t.scope, { byExternal: new Map(), amStripeIds: [], total: 0 }, emulator))
    // Each Stripe check takes 0.6 s (verify=true checks every row): the import outlives the
    // threshold. Latency is a test device of the emulator, not a Stripe behaviour.
    await Effect.runPromise(emulator.setFaults({ latencyMs: 600, paths: ["/v1/customers"] }))
    const started = await upload(t.apiKey, csvOf("slow"), "?verify=true")
    expect(started.status).toBe(202)
    const final = await waitForMigration(app, t.apiKey, started.data.migration_id)
    emulator.resetFaults()
    const state = await app.run(tenantState(t.scope))
    const applied = state.mappings.filter((m) => m.endsWith(":csv"))
    expect({ status: final.status, error: final.error, applied: applied.length }).toEqual({ status: "completed", error: null, applied: stripeIds.length })
    expect(final.counts).toMatchObject({ seen: stripeIds.length, mapped: stripeIds.length })
    expect(final.progress).toMatchObject({ rows_done: stripeIds.length, rows_total: stripeIds.length })
  })

  it("an import stopped half way is undone by the next runner and ends failed with nothing applied", async () => {
    const t = await newTenant(app, "stopped")
    await app.run(seedTenant(t.scope, { byExternal: new Map(), amStripeIds: [], total: 0 }, emulator))
    const before = await app.run(tenantState(t.scope))
    await Effect.runPromise(emulator.setFaults({ latencyMs: 400, paths: ["/v1/customers"] }))
    const started = await upload(t.apiKey, csvOf("stop"), "?verify=true")
    const id = started.data.migration_id
    // wait until a chunk has committed (rows applied), then stop the service mid-import
    for (;;) {
      const s = await app.request(t.apiKey, "GET", `/v1/stripe/migrate/status/${id}`)
      if (s.data.progress.rows_done >= 2) {
        expect(s.data.status).toBe("running")
        break
      }
      await new Promise((r) => setTimeout(r, 20))
    }
    await app.dispose()
    emulator.resetFaults()
    app = await startApp(db, env)
    const final = await waitForMigration(app, t.apiKey, id)
    expect(final.status).toBe("failed")
    expect(final.error).toMatch(/^interrupted: the import stopped before it finished; what it had applied was undone \(\d+ mapping\(s\) and \d+ customer\(s\) removed/)
    expect(final.counts).toMatchObject({ mapped: 0, created: 0 })
    expect(await app.run(tenantState(t.scope))).toEqual(before)
  })
})

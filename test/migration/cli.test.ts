/**
 * `flexprice stripe-migrate` in process over a database prepared by the service: a migration
 * with its summary and exit status, then a CSV import with a bad row (non-zero exit).
 */
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { Cause, ConfigProvider, Effect, Exit, Layer, Logger, LogLevel } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { stripeMigrateCommand } from "../../src/migration/Cli.js"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import {
  type App,
  type Database,
  encryptionEnv,
  freshDatabase,
  newTenant,
  seedStripe,
  seedTenant,
  startApp,
  startEmulator,
  stripeEnv,
  tenantState,
  EXPECTED
} from "./support.js"

describe("flexprice stripe-migrate", () => {
  let emulator: StripeEmulatorHandle
  let closeEmulator: () => Promise<void>
  let db: Database
  let env: Record<string, string>
  let tenant: Awaited<ReturnType<typeof newTenant>>
  let app: App | undefined

  beforeAll(async () => {
    ;({ emulator, close: closeEmulator } = await startEmulator())
    const data = await seedStripe(emulator)
    db = await freshDatabase("pglite")
    env = { ...db.env, ...stripeEnv(emulator.url), ...encryptionEnv(), FLEXPRICE_WATERMARK_LAG_SECONDS: "0" }
    app = await startApp(db, env)
    tenant = await newTenant(app, "cli")
    await app.run(seedTenant(tenant.scope, data, emulator))
    await app.dispose() // the embedded data directory admits one process at a time
    app = undefined
  })
  afterAll(async () => {
    await app?.dispose()
    await db?.drop()
    await closeEmulator?.()
  })

  const cli = (args: ReadonlyArray<string>) =>
    Effect.runPromiseExit(
      Command.run(Command.make("flexprice").pipe(Command.withSubcommands([stripeMigrateCommand])), { name: "flexprice", version: "test" })([
        "node",
        "flexprice",
        "stripe-migrate",
        ...args
      ]).pipe(
        Effect.provide(NodeContext.layer),
        Effect.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))),
        Effect.provide(Logger.minimumLogLevel(LogLevel.Error))
      )
    )

  it("migrates with a summary and exits 0; a CSV with a bad row exits non-zero after applying the good ones", async () => {
    const ids = ["--tenant", tenant.scope.tenantId, "--environment", tenant.scope.environmentId]
    const dry = await cli([...ids, "--dry-run"])
    expect(Exit.isSuccess(dry)).toBe(true)
    const run = await cli(ids)
    expect(Exit.isSuccess(run)).toBe(true)

    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "fp-cli-")), "map.csv")
    const stripeId = (await Effect.runPromise(emulator.createCustomer({ name: "csv" }))).id
    fs.writeFileSync(file, `external_id,stripe_customer_id\ncsv-1,${stripeId}\ncsv-2,nope\n`)
    const csv = await cli([...ids, "--csv", file])
    expect(Exit.isFailure(csv) && String(Cause.squash(csv.cause))).toContain(`1 bad row(s) in ${file}`)

    const bad = await cli(["--tenant", "tnt_nope", "--environment", "env_nope"])
    expect(Exit.isFailure(bad) && String(Cause.squash(bad.cause))).toContain("no environment env_nope in tenant tnt_nope")

    app = await startApp(db, env)
    const state = await app.run(tenantState(tenant.scope))
    expect(state.mappings.filter((m) => m.endsWith(":active:migration"))).toHaveLength(EXPECTED.mapped)
    expect(state.mappings).toContain(`csv-1→${stripeId}:active:csv`)
    const list = await app.request(tenant.apiKey, "GET", "/v1/stripe/migrate")
    expect(list.data.migrations.map((m) => [m.kind, m.status, m.dry_run])).toEqual([
      ["csv", "completed", false],
      ["stripe_customers", "completed", false],
      ["stripe_customers", "completed", true]
    ])
    expect(list.data.migrations[1].counts).toEqual(EXPECTED)
  }, 300_000)
})

/**
 * `flexprice stripe-migrate`: the Stripe customer migration (or a CSV mapping import) from a
 * terminal, in process over the configured database — the same MigrationService the API uses.
 *
 * Progress goes to stderr (rewritten in place on a TTY, one line per page otherwise); the
 * summary table goes to stdout. Exit status is non-zero when the job failed or any customer /
 * row failed. A run left `running` (Ctrl-C, crash) is resumed by the next `stripe-migrate` for
 * that environment, or by a running server.
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import * as fs from "node:fs"
import { AppLive } from "../App.js"
import { EnvironmentId, randomToken, TenantId, TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { MigrationRunnerConfig } from "./Config.js"
import { CsvImport } from "./CsvImport.js"
import { MigrationService } from "./MigrationService.js"
import type { ConflictStrategy, MigrationJob, MigrationProgress } from "./Model.js"

const tenant = Options.text("tenant").pipe(Options.withDescription("tenant id (tnt_…)"))
const environment = Options.text("environment").pipe(Options.withDescription("environment id (env_…)"))
const dryRun = Options.boolean("dry-run").pipe(Options.withDescription("report what would happen; write nothing"))
const csv = Options.file("csv", { exists: "yes" }).pipe(
  Options.optional,
  Options.withDescription("import external_id,stripe_customer_id[,name,email] rows from this file instead of listing Stripe")
)
const conflictStrategy = Options.choice("conflict-strategy", ["skip", "overwrite", "fail"] as const).pipe(
  Options.withDefault("skip" as ConflictStrategy),
  Options.withDescription("what to do when a customer is already mapped differently")
)
const noCreate = Options.boolean("no-create").pipe(Options.withDescription("do not create missing FlexPrice customers"))

const pad = (s: string, n: number) => s + " ".repeat(Math.max(0, n - s.length))
const table = (rows: ReadonlyArray<readonly [string, string | number]>) => {
  const width = Math.max(...rows.map(([k]) => k.length))
  return rows.map(([k, v]) => `${pad(k, width)}  ${v}`).join("\n")
}

/** One progress line: seen / mapped / conflicts (pages, the rest as they appear). */
export const progressLine = (p: MigrationProgress) =>
  `seen ${p.counts.seen}  mapped ${p.counts.mapped}  conflicts ${p.counts.conflicts}  ` +
  `created ${p.counts.created}  already ${p.counts.already_mapped}  no-external-id ${p.counts.missing_external_id}` +
  (p.counts.failed > 0 ? `  failed ${p.counts.failed}` : "") +
  `  (page ${p.pages})`

export const jobSummary = (job: MigrationJob) =>
  table([
    ["migration", job.id],
    ["status", job.status + (job.dryRun ? " (dry run)" : "")],
    ["seen", job.counts.seen],
    ["mapped", job.counts.mapped],
    ["created", job.counts.created],
    ["already_mapped", job.counts.already_mapped],
    ["conflicts", job.counts.conflicts],
    ["missing_external_id", job.counts.missing_external_id],
    ["customer_missing", job.counts.customer_missing],
    ["failed", job.counts.failed],
    ["pages", job.pages],
    ["problems", job.problemsTotal],
    ...(job.error !== null ? ([["error", job.error]] as const) : [])
  ])

const csvSummary = (job: MigrationJob) =>
  [
    table([
      ["migration", job.id],
      ["status", job.status + (job.dryRun ? " (dry run)" : "")],
      ["rows", job.rowsTotal ?? job.rowsDone],
      ["valid", job.csv?.valid_rows ?? 0],
      ["bad", job.problemsTotal],
      ["applied", job.csv?.applied === true ? "yes" : "no"],
      ["mapped", job.counts.mapped],
      ["created", job.counts.created],
      ["already_mapped", job.counts.already_mapped],
      ["overwritten", job.csv?.overwritten ?? 0],
      ...(job.error !== null ? ([["error", job.error]] as const) : [])
    ]),
    ...job.problems.slice(0, 50).map((p) => `${p.message}${p.code === "failed" ? "" : ` (${p.code})`}`),
    ...(job.problemsTotal > 50 ? [`… and ${job.problemsTotal - 50} more bad rows`] : [])
  ].join("\n")

export const stripeMigrateCommand = Command.make(
  "stripe-migrate",
  { tenant, environment, dryRun, csv, conflictStrategy, noCreate },
  (args) =>
    Effect.gen(function* () {
      const scope = yield* Effect.try({
        try: () => new TenantScope({ tenantId: TenantId.make(args.tenant), environmentId: EnvironmentId.make(args.environment) }),
        catch: () => new Error("--tenant must be a tnt_… id and --environment an env_… id")
      })
      return yield* migrate(args, scope).pipe(Effect.provideService(CurrentTenant, scope))
    }).pipe(Effect.provide(AppLive))
).pipe(
  Command.withDescription(
    "Import existing Stripe customers (metadata.external_id) or a CSV of external_id,stripe_customer_id pairs into FlexPrice customer mappings"
  )
)

const migrate = (
  args: { readonly tenant: string; readonly environment: string; readonly dryRun: boolean; readonly csv: Option.Option<string>; readonly conflictStrategy: ConflictStrategy; readonly noCreate: boolean },
  scope: TenantScope
) =>
    Effect.gen(function* () {
      const tenants = yield* TenantRepo
      if (!(yield* tenants.environmentExists(scope)))
        return yield* Effect.fail(new Error(`no environment ${args.environment} in tenant ${args.tenant}`))
      const service = yield* MigrationService
      const { staleSeconds } = yield* MigrationRunnerConfig
      const owner = `cli_${randomToken(12)}`
      const options = { dryRun: args.dryRun, createMissingCustomers: !args.noCreate, conflictStrategy: args.conflictStrategy }

      if (Option.isSome(args.csv)) {
        const text = fs.readFileSync(args.csv.value, "utf8")
        const csvImport = yield* CsvImport
        const csvOptions = { ...options, verify: false, allOrNothing: false }
        const job = yield* csvImport.start(text, csvOptions, owner).pipe(
          Effect.catchTag("MigrationAlreadyRunning", (e) =>
            Effect.fail(new Error(`migration ${e.runningId} is already running in this environment (GET /v1/stripe/migrate/status/${e.runningId})`))
          )
        )
        yield* csvImport.run(job, text, csvOptions, owner)
        const final = yield* service.mustGet(job.id)
        yield* Console.log(csvSummary(final))
        if (final.problemsTotal > 0 || final.status !== "completed")
          return yield* Effect.fail(new Error(`${final.problemsTotal} bad row(s) in ${args.csv.value}${final.error !== null ? `: ${final.error}` : ""}`))
        return
      }

      const tty = process.stderr.isTTY === true
      const onPage = (p: MigrationProgress) =>
        Effect.sync(() => {
          if (tty) process.stderr.write(`\r\u001b[2K${progressLine(p)}`)
          else process.stderr.write(`${progressLine(p)}\n`)
        })
      const resumable = yield* service.claimRunning(owner, staleSeconds)
      const job = Option.isSome(resumable)
        ? resumable.value
        : yield* service.start(options, owner).pipe(
            Effect.catchTag("MigrationAlreadyRunning", (e) =>
              Effect.fail(new Error(`migration ${e.runningId} is already running in this environment (GET /v1/stripe/migrate/status/${e.runningId})`))
            )
          )
      if (Option.isSome(resumable)) process.stderr.write(`resuming ${job.id} after page ${job.pages}\n`)
      else process.stderr.write(`started ${job.id}${job.dryRun ? " (dry run)" : ""}\n`)
      yield* service.run(job, owner, onPage)
      if (tty) process.stderr.write("\n")
      const final = yield* service.mustGet(job.id)
      yield* Console.log(jobSummary(final))
      for (const p of final.problems.slice(0, 20))
        process.stderr.write(`${p.code}: ${p.stripe_customer_id}${p.external_id !== undefined ? ` (${p.external_id})` : ""}: ${p.message}\n`)
      if (final.status !== "completed" || final.counts.failed > 0)
        return yield* Effect.fail(new Error(`migration ${final.id} ${final.status}${final.error !== null ? `: ${final.error}` : ""} (${final.counts.failed} failed)`))
    })

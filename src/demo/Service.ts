/**
 * Starts the service for the demo from the same Layers as `serve` (HTTP API on a free loopback
 * port, AppLive, the sync schedule, telemetry), pointed at the Stripe emulator, over a fresh
 * embedded PGlite directory — or PostgreSQL/ClickHouse when FLEXPRICE_DATABASE_URL /
 * FLEXPRICE_CLICKHOUSE_URL are set.
 */
import { HttpServer } from "@effect/platform"
import { Effect, Layer, LogLevel, type Scope } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeServerLive } from "../http/Server.js"
import { localService } from "../LocalService.js"
import { scrubString } from "../observability/Scrub.js"
import { Telemetry } from "../observability/Telemetry.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { SyncScheduler } from "../sync/SyncScheduler.js"
import { fail } from "./Client.js"
import type { DemoFailed } from "./Model.js"

export interface DemoService {
  readonly baseUrl: string
  /** What `backend` says in the report: where usage and the ledger live. */
  readonly backend: string
  readonly dataDir: string | null
  /** What `flexprice tenant create` does, in process: the tenant and its API key. */
  readonly createTenant: (name: string) => Effect.Effect<{ readonly tenantId: string; readonly environmentId: string; readonly apiKey: string }, DemoFailed>
}

export const startService = (options: {
  readonly emulatorUrl: string
  readonly keep: boolean
  /** Configuration: the demo's extra env first, then the process environment. */
  readonly lookup: (name: string) => string
  readonly extraEnv: Readonly<Record<string, string>>
  /** An existing embedded data directory instead of a fresh one (DemoOptions.dataDir); left in place. */
  readonly dataDir?: string
}): Effect.Effect<DemoService, DemoFailed, Scope.Scope> =>
  Effect.gen(function* () {
    const { lookup, keep } = options
    const postgresUrl = lookup("FLEXPRICE_DATABASE_URL")
    const clickhouseUrl = lookup("FLEXPRICE_CLICKHOUSE_URL")
    let dataDir: string | null = null
    if (postgresUrl === "" && options.dataDir !== undefined) dataDir = options.dataDir
    else if (postgresUrl === "") {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-demo-"))
      dataDir = dir
      yield* Effect.addFinalizer(() => (keep ? Effect.void : Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
    }
    const backend = [
      postgresUrl === "" ? `embedded PGlite (${dataDir})` : `PostgreSQL (${scrubString(postgresUrl)})`,
      clickhouseUrl === "" ? "events in the relational database" : `events in ClickHouse (${clickhouseUrl})`
    ].join(", ")

    const env: Record<string, string> = {
      FLEXPRICE_HTTP_ADDR: "127.0.0.1:0",
      // A fresh master key unless the environment has one — except for a directory kept with
      // --keep: there the embedded key file is created in it (as `serve` does), so it can be
      // served again.
      ...(!(dataDir !== null && keep) && lookup("FLEXPRICE_ENCRYPTION_KEYS") === ""
        ? { FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}` }
        : {}),
      FLEXPRICE_SCHEDULE_ENABLED: "true",
      FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: "2",
      STRIPE_SYNC_GRACE_PERIOD_MINUTES: "1",
      // One process: in-flight ingests are tracked by IngestWatermark; the lag only covers
      // commits of other replicas, so a sync right after the last acknowledged ingest sees it all.
      FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
      STRIPE_API_BASE: options.emulatorUrl,
      STRIPE_METER_EVENTS_API_BASE: options.emulatorUrl,
      // The emulator is local and unthrottled; Stripe's own test-mode budget (25 r/s, client
      // default 20) would make the reconciliation's one-summary-call-per-pair the slowest phase.
      STRIPE_RATE_LIMIT_TEST_PER_SECOND: "200",
      ...(dataDir !== null ? { FLEXPRICE_DATA_DIR: dataDir } : {}),
      ...options.extraEnv
    }
    const quiet = lookup("FLEXPRICE_LOG_LEVEL") === ""
    // The same Layers as `serve` (src/LocalService.ts), with the HTTP server's address exposed to find the port.
    const service = localService({
      server: NodeServerLive,
      settings: env,
      processEnvironment: true,
      beside: SyncScheduler.layer,
      below: Telemetry.layer,
      // FLEXPRICE_LOG_LEVEL set: Effect's default minimum (Info), as under `serve`
      logLevel: quiet ? LogLevel.Warning : LogLevel.Info
    })
    const context = yield* Layer.build(service).pipe(
      Effect.catchAllCause((cause) => Effect.fail(fail(`the service did not start: ${String(cause).split("\n")[0]}`)))
    )
    const address = Effect.runSync(Effect.provide(HttpServer.HttpServer, context)).address
    if (address._tag !== "TcpAddress") return yield* fail("the service is not listening on TCP")
    const createTenant = (name: string) =>
      Effect.provide(
        Effect.flatMap(TenantRepo, (r) => r.create(name, "demo")),
        context
      ).pipe(Effect.mapError((e) => fail(`tenant create failed: ${String(e)}`)))
    return { baseUrl: `http://127.0.0.1:${address.port}`, backend, dataDir, createTenant }
  })

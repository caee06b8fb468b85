/**
 * A real service for integration tests: the full HTTP server and app Layers on a free loopback
 * port, over embedded PGlite (a copy of the migrated template), a fresh PostgreSQL database, or
 * PGlite + ClickHouse. Tests talk to it over HTTP with fetch, like any client.
 */
import { HttpServer } from "@effect/platform"
import { ConfigProvider, Effect, Layer, Logger, LogLevel, ManagedRuntime } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"
import { inject } from "vitest"
import { AppLive } from "../../src/App.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { ElevatedAccess } from "../../src/db/RowSecurity.js"
import { HttpApiLive, NodeServerLive } from "../../src/http/Server.js"
import { fetchAnswer } from "../../src/demo/Fetch.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { withServiceUrl } from "./clickhouse.js"
import { contractCheckEnabled, openApiContract } from "./openapiContract.js"

export type Backend = "pglite" | "postgres" | "clickhouse"

export const POSTGRES_URL_VAR = "FLEXPRICE_TEST_POSTGRES_URL"

/** A fresh database on the test PostgreSQL server; dropped by the returned cleanup. */
export const freshPostgresDatabase = async (serverUrl: string): Promise<{ url: string; drop: () => Promise<void> }> => {
  const name = `fp_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
  const admin = (statement: string) =>
    Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(Layer.build(PgClient.layer({ url: Redacted.make(serverUrl), maxConnections: 1 })), (ctx) =>
          Effect.provide(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(statement)), ctx)
        )
      )
    )
  await admin(`CREATE DATABASE ${name}`)
  const u = new URL(serverUrl)
  u.pathname = `/${name}`
  return {
    url: u.toString(),
    drop: async () => {
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    }
  }
}

/** A fresh embedded data directory copied from the migrated template. */
export const freshDataDir = (): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-test-"))
  fs.cpSync(inject("pgliteTemplateDir"), dir, { recursive: true })
  return dir
}

export interface TestApp {
  readonly baseUrl: string
  readonly apiKey: string
  readonly scope: TenantScope
  readonly backend: Backend
  readonly dataDir: string | undefined
  /** Another tenant environment on the same service. */
  readonly newTenant: (name?: string) => Promise<{ apiKey: string; scope: TenantScope }>
  /** Run an effect against the app's services (for assertions below the HTTP layer). */
  readonly run: <A, E>(effect: Effect.Effect<A, E, Layer.Layer.Success<typeof AppLive>>) => Promise<A>
  readonly request: (method: string, path: string, body?: unknown, options?: { apiKey?: string; headers?: Record<string, string>; rawBody?: string }) => Promise<{ status: number; body: any; text: string }>
  readonly dispose: () => Promise<void>
}

export interface TestAppOptions {
  readonly backend?: Backend
  readonly env?: Record<string, string>
  /** Extra Layers served together with the app (e.g. a scheduler), built on AppLive. */
  readonly extra?: Layer.Layer<never, unknown, Layer.Layer.Success<typeof AppLive>>
  /** backend `postgres`: use this database (another replica's) instead of a fresh one; not dropped */
  readonly databaseUrl?: string
  /** Provided beneath everything (e.g. a log capture, Telemetry.layerTest); its services reach `run`. */
  readonly observe?: Layer.Layer<any>
}

/**
 * Merged beside a test app's layers: effects the test runs itself act as an operator at psql,
 * reading and changing every tenant's rows (the table owner). The served app and its workers do
 * not get it and run as in production (src/db/RowSecurity.ts); product code run by the test
 * inside a tenant scope still meets that scope's wall.
 */
export const OperatorAccess = Layer.succeed(ElevatedAccess, { role: "owner", reason: "test inspection" })

/** A test service's settings: no watermark lag, no scheduler, a fresh master key; `extra` wins. */
export const testEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  FLEXPRICE_HTTP_ADDR: "127.0.0.1:0",
  FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
  FLEXPRICE_SCHEDULE_ENABLED: "false",
  // a fresh master key per app (PostgreSQL mode refuses to start without one)
  FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}`,
  ...extra
})

export const startTestApp = async (options: TestAppOptions = {}): Promise<TestApp> => {
  const backend = options.backend ?? "pglite"
  const cleanups: Array<() => Promise<void>> = []
  const env = testEnv(options.env)
  let dataDir: string | undefined
  if (backend === "postgres" && options.databaseUrl !== undefined) {
    env["FLEXPRICE_DATABASE_URL"] = options.databaseUrl
  } else if (backend === "postgres") {
    const server = process.env[POSTGRES_URL_VAR]
    if (!server) throw new Error(`${POSTGRES_URL_VAR} is not set`)
    const db = await freshPostgresDatabase(server)
    cleanups.push(db.drop)
    env["FLEXPRICE_DATABASE_URL"] = db.url
  } else {
    dataDir = freshDataDir()
    env["FLEXPRICE_DATA_DIR"] = dataDir
    const dir = dataDir
    cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
  }
  if (backend === "clickhouse") {
    const url = process.env["FLEXPRICE_TEST_CLICKHOUSE_URL"]
    if (!url) throw new Error("FLEXPRICE_TEST_CLICKHOUSE_URL is not set")
    env["FLEXPRICE_CLICKHOUSE_URL"] = url
    env["FLEXPRICE_CLICKHOUSE_DATABASE"] = env["FLEXPRICE_CLICKHOUSE_DATABASE"] ?? "flexprice_test"
  }
  const provider = ConfigProvider.fromMap(new Map(Object.entries(env))).pipe(ConfigProvider.orElse(() => ConfigProvider.fromEnv()))
  const served = HttpApiLive.pipe(Layer.provideMerge(NodeServerLive))
  const layer = (options.extra ? Layer.merge(served, options.extra) : served).pipe(
    Layer.provideMerge(AppLive),
    Layer.provide(Layer.setConfigProvider(provider)),
    // FLEXPRICE_TEST_LOG (in `env`, or the shell's) lets every level through, e.g. to a capturing logger
    Layer.provide(Logger.minimumLogLevel((env["FLEXPRICE_TEST_LOG"] ?? process.env["FLEXPRICE_TEST_LOG"]) ? LogLevel.Debug : LogLevel.Warning)),
    (l) => (options.observe ? Layer.provideMerge(l, options.observe) : l)
  )
  const runtime = ManagedRuntime.make(Layer.merge(layer, OperatorAccess))
  const address = await runtime.runPromise(HttpServer.HttpServer.pipe(Effect.map((s) => s.address)))
  const baseUrl = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
  const newTenant = async (name = "test") => {
    const t = await runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create(`${name}-${Math.random().toString(36).slice(2)}`, "test")))
    return { apiKey: t.apiKey, scope: { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope }
  }
  const first = await newTenant()
  const request: TestApp["request"] = async (method, p, body, opts = {}) => {
    const answer = await fetchAnswer(`${baseUrl}${p}`, {
      method,
      headers: {
        ...(opts.apiKey === "" ? {} : { "x-api-key": opts.apiKey ?? first.apiKey }),
        ...(body !== undefined || opts.rawBody !== undefined ? { "content-type": "application/json" } : {}),
        ...opts.headers
      },
      ...(opts.rawBody !== undefined ? { body: opts.rawBody } : body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    // every response a suite receives is checked against openapi.json (test/support/openapiContract.ts)
    if (contractCheckEnabled()) openApiContract().assert({ method, url: p, status: answer.status, contentType: answer.contentType, text: answer.text })
    return answer
  }
  return {
    baseUrl,
    apiKey: first.apiKey,
    scope: first.scope,
    backend,
    dataDir,
    newTenant,
    run: (effect) => runtime.runPromise(effect as Effect.Effect<any, any, never>),
    request,
    dispose: async () => {
      await runtime.dispose()
      for (const c of cleanups.reverse()) await c().catch(() => undefined)
    }
  }
}

/**
 * The backends a suite runs on: always PGlite; PostgreSQL when FLEXPRICE_TEST_POSTGRES_URL is
 * set (and required under CI). `register` is called once per available backend.
 */
export const forEachBackend = (
  backends: ReadonlyArray<Backend>,
  register: (backend: Backend) => void
): void => {
  for (const b of backends) {
    if (b === "pglite") register(b)
    else if (b === "postgres")
      withServiceUrl({ label: "postgres", envVar: POSTGRES_URL_VAR, example: "postgres://postgres@127.0.0.1:5432/postgres" }, () => register(b))
    else withServiceUrl({ label: "clickhouse", envVar: "FLEXPRICE_TEST_CLICKHOUSE_URL", example: "http://127.0.0.1:8123" }, () => register(b))
  }
}

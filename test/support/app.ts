/**
 * A real service for integration tests: the full HTTP server and app Layers on a free loopback
 * port, over embedded PGlite (a copy of the migrated template), a fresh PostgreSQL database, or
 * PGlite + ClickHouse. Tests talk to it over HTTP with fetch, like any client.
 */
import { HttpServer } from "@effect/platform"
import { Effect, Layer, LogLevel, ManagedRuntime } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"
import { inject } from "vitest"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { ElevatedAccess } from "../../src/db/RowSecurity.js"
import { NodeServerLive } from "../../src/http/Server.js"
import { localService, type AppServices } from "../../src/LocalService.js"
import { fetchAnswer, type HttpAnswer } from "../../src/demo/Fetch.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { withServiceUrl } from "./clickhouse.js"
import { contractCheckEnabled, openApiContract } from "./openapiContract.js"
import type { ErrorEnvelope, Method, SuccessBody } from "./routes.js"

/** What the app's runtime provides to `run`. */
export type { AppServices }

/**
 * An effect whose requirements the test app's runtime provides beyond AppLive's (the `observe`
 * Layer's services, ElevatedAccess): the caller vouches for them, as it chose `observe`.
 */
export const provided = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, never> => effect as Effect.Effect<A, E, never>

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
  readonly run: <A, E>(effect: Effect.Effect<A, E, AppServices>) => Promise<A>
  /**
   * One request as the tenant (or `apiKey`), its answer checked against openapi.json; `data` and
   * `error` are the documented success body and error envelope, typed from the method and path.
   */
  readonly request: <M extends Method, P extends string>(method: M, path: P, body?: unknown, options?: RequestOptions) => Promise<Answer<SuccessBody<M, P>>>
  readonly dispose: () => Promise<void>
}

export interface RequestOptions {
  /** "" sends no key */
  readonly apiKey?: string
  readonly headers?: Record<string, string>
  /** sent as is instead of the JSON of `body` */
  readonly rawBody?: string
}

/** An answer of the service: what came over the wire, and typed views that say when they do not apply. */
export interface Answer<S> {
  readonly status: number
  readonly contentType: string | null
  readonly text: string
  /** The body parsed as JSON; the text when it is not JSON; undefined when empty. */
  readonly body: unknown
  /** The documented 2xx body; reading it from any other answer throws with the status and body. */
  readonly data: S
  /** The error envelope's `error`; reading it from an answer below 400 throws with the status and body. */
  readonly error: ErrorEnvelope["error"]
}

/** A response of the service fetched by hand (a full URL), checked against openapi.json like `request`'s. */
export const checkedAnswer = async <S>(method: string, url: string, response: Response): Promise<Answer<S>> => {
  const text = await response.text()
  let body: unknown = undefined
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = text
  }
  const raw: HttpAnswer = { status: response.status, body, text, contentType: response.headers.get("content-type") }
  const u = new URL(url)
  if (contractCheckEnabled()) openApiContract().assert({ method, url: u.pathname + u.search, status: raw.status, contentType: raw.contentType, text })
  return answerOf<S>(raw, `${method} ${u.pathname}`)
}

/** Gives an answer its typed views (the contract check has already matched the body to the document). */
export const answerOf = <S>(raw: HttpAnswer, label: string): Answer<S> => {
  const refuse = (wanted: string): never => {
    throw new Error(`${label} → ${raw.status}, not ${wanted}: ${raw.text.slice(0, 500)}`)
  }
  return {
    ...raw,
    get data(): S {
      return raw.status >= 200 && raw.status < 300 ? (raw.body as S) : refuse("a 2xx answer")
    },
    get error(): ErrorEnvelope["error"] {
      const body = raw.body
      if (raw.status < 400 || typeof body !== "object" || body === null || !("error" in body)) return refuse("an error envelope")
      return (body as ErrorEnvelope).error
    }
  }
}

export interface TestAppOptions {
  readonly backend?: Backend
  readonly env?: Record<string, string>
  /** Extra Layers served together with the app (e.g. a scheduler), built on AppLive. */
  readonly extra?: Layer.Layer<never, unknown, AppServices>
  /** backend `postgres`: use this database (another replica's) instead of a fresh one; not dropped */
  readonly databaseUrl?: string
  /** Provided beneath everything (e.g. a log capture, Telemetry.layerTest); its services reach `run`. */
  readonly observe?: Layer.Layer<never>
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
  const layer = localService({
    server: NodeServerLive,
    settings: env,
    processEnvironment: true,
    beside: options.extra ?? Layer.empty,
    below: options.observe ?? Layer.empty,
    // FLEXPRICE_TEST_LOG (in `env`, or the shell's) lets every level through, e.g. to a capturing logger
    logLevel: (env["FLEXPRICE_TEST_LOG"] ?? process.env["FLEXPRICE_TEST_LOG"]) ? LogLevel.Debug : LogLevel.Warning
  })
  const runtime = ManagedRuntime.make(Layer.merge(layer, OperatorAccess))
  const address = await runtime.runPromise(HttpServer.HttpServer.pipe(Effect.map((s) => s.address)))
  const baseUrl = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
  const newTenant = async (name = "test") => {
    const t = await runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create(`${name}-${Math.random().toString(36).slice(2)}`, "test")))
    return { apiKey: t.apiKey, scope: { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope }
  }
  const first = await newTenant()
  const request: TestApp["request"] = async <M extends Method, P extends string>(method: M, p: P, body?: unknown, opts: RequestOptions = {}) => {
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
    return answerOf<SuccessBody<M, P>>(answer, `${method} ${p}`)
  }
  return {
    baseUrl,
    apiKey: first.apiKey,
    scope: first.scope,
    backend,
    dataDir,
    newTenant,
    run: (effect) => runtime.runPromise(provided(effect)),
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

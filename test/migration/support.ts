/**
 * Migration test harness: the full service over a database that outlives one app instance (so a
 * test can stop the service mid-migration and start it again on the same data), a Stripe
 * emulator holding the 2,500-customer account, and per-tenant seeding of pre-existing state.
 */
import { HttpServer } from "@effect/platform"
import { Effect, Exit, Layer, LogLevel, ManagedRuntime, Redacted, Scope } from "effect"
import * as fs from "node:fs"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { NodeServerLive } from "../../src/http/Server.js"
import { type AppServices, localService } from "../../src/LocalService.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { CustomerRepo } from "../../src/repositories/CustomerRepo.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { generateKeyEntry } from "../../src/security/Encryption.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { type Answer, type Backend, checkedAnswer, freshDataDir, freshPostgresDatabase, OperatorAccess, POSTGRES_URL_VAR } from "../support/app.js"
import type { Method, SuccessBody } from "../support/routes.js"
import { PgClient } from "@effect/sql-pg"
import { storeStripeConfig } from "../support/stripe-config.js"

export const STRIPE_KEY = "sk_test_51FlexpriceMigrationTests0000SECRET4242"

export interface Database {
  readonly env: Record<string, string>
  readonly drop: () => Promise<void>
}

export const freshDatabase = async (backend: Backend): Promise<Database> => {
  if (backend === "postgres") {
    const server = process.env[POSTGRES_URL_VAR]
    if (!server) throw new Error(`${POSTGRES_URL_VAR} is not set`)
    const db = await freshPostgresDatabase(server)
    return { env: { FLEXPRICE_DATABASE_URL: db.url }, drop: db.drop }
  }
  const dir = freshDataDir()
  return { env: { FLEXPRICE_DATA_DIR: dir }, drop: async () => fs.rmSync(dir, { recursive: true, force: true }) }
}

export const stripeEnv = (url: string): Record<string, string> => ({
  STRIPE_API_BASE: url,
  STRIPE_METER_EVENTS_API_BASE: url,
  STRIPE_RATE_LIMIT_TEST_PER_SECOND: "10000",
  STRIPE_MAX_CONCURRENCY: "16",
  STRIPE_RETRY_RATE_LIMITED_BASE_MS: "2",
  STRIPE_RETRY_UNAVAILABLE_BASE_MS: "2",
  STRIPE_API_TIMEOUT_SECONDS: "10"
})


export interface App {
  readonly baseUrl: string
  readonly run: <A, E>(effect: Effect.Effect<A, E, AppServices>) => Promise<A>
  readonly asTenant: <A, E>(scope: TenantScope, effect: Effect.Effect<A, E, AppServices | CurrentTenant>) => Promise<A>
  /** One request as `apiKey`, its answer checked against openapi.json and typed from the method and path (test/support/routes.ts). */
  readonly request: <M extends Method, P extends string>(
    apiKey: string,
    method: M,
    path: P,
    body?: unknown,
    options?: { headers?: Record<string, string>; rawBody?: string | Uint8Array | FormData }
  ) => Promise<Answer<SuccessBody<M, P>>>
  readonly dispose: () => Promise<void>
}

/** The HTTP service (with the migration runner) over `db`; disposing it leaves the data. */
export const startApp = async (db: Database, env: Record<string, string>): Promise<App> => {
  const all: Record<string, string> = {
    FLEXPRICE_HTTP_ADDR: "127.0.0.1:0",
    FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
    FLEXPRICE_SCHEDULE_ENABLED: "false",
    ...db.env,
    ...env
  }
  const layer = localService({
    server: NodeServerLive,
    settings: all,
    processEnvironment: true,
    beside: Layer.empty,
    below: Layer.empty,
    logLevel: process.env["FLEXPRICE_TEST_LOG"] ? LogLevel.Debug : LogLevel.Error
  })
  const runtime = ManagedRuntime.make(Layer.merge(layer, OperatorAccess))
  const address = await runtime.runPromise(HttpServer.HttpServer.pipe(Effect.map((s) => s.address)))
  const baseUrl = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
  const run = <A, E>(effect: Effect.Effect<A, E, AppServices>) => runtime.runPromise(effect as Effect.Effect<A, E, never>)
  return {
    baseUrl,
    run,
    asTenant: (scope, effect) => run(Effect.provideService(effect, CurrentTenant, scope)),
    request: async <M extends Method, P extends string>(apiKey: string, method: M, path: P, body?: unknown, opts: { headers?: Record<string, string>; rawBody?: string | Uint8Array | FormData } = {}) => {
      const url = `${baseUrl}${path}`
      const res = await fetch(url, {
        method,
        headers: { "x-api-key": apiKey, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...opts.headers },
        ...(opts.rawBody !== undefined ? { body: opts.rawBody } : body !== undefined ? { body: JSON.stringify(body) } : {})
      })
      return checkedAnswer<SuccessBody<M, P>>(method, url, res)
    },
    dispose: () => runtime.dispose()
  }
}

/** A master key shared by every app instance started on one database. */
export const encryptionEnv = (): Record<string, string> => ({ FLEXPRICE_ENCRYPTION_KEYS: Redacted.value(generateKeyEntry("v1")) })

export const startEmulator = async (): Promise<{ emulator: StripeEmulatorHandle; close: () => Promise<void> }> => {
  const scope = Effect.runSync(Scope.make())
  // The emulator's test-mode rate limit (~25 requests/s, as Stripe's) is lifted: these suites are
  // about migration outcomes at thousands of customers, and `verify` checks one customer per call
  // as a live key (100 requests/s and more) allows. Rate limiting itself is covered by the
  // emulator's faithful tests and the Stripe client's back-pressure tests.
  const emulator = await Effect.runPromise(
    makeStripeEmulator({ apiKey: STRIPE_KEY, now: () => Date.now(), rateLimits: "off" }).pipe(Scope.extend(scope))
  )
  return { emulator, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/**
 * The Stripe account of the tests (created oldest first; Stripe lists newest first):
 * - 2,150 customers `ext-0000`…`ext-2149` with metadata.external_id;
 * - 100 later customers repeating `ext-0000`…`ext-0099` (duplicates: one of each pair maps);
 * - 100 without external_id;
 * - 100 `pc-000`…`pc-099`, whose FlexPrice customers are already mapped to OTHER Stripe ids;
 * - 50 `am-00`…`am-49`, already mapped to exactly these Stripe customers.
 * FlexPrice side (per tenant, `seedTenant`): `ext-1000`…`ext-1199` exist unmapped, plus the
 * pc-/am- customers and their mappings.
 */
export interface Dataset {
  readonly byExternal: Map<string, Array<string>>
  readonly amStripeIds: ReadonlyArray<string>
  readonly total: number
}

export const EXPECTED = {
  seen: 2500,
  mapped: 2150,
  created: 1950,
  already_mapped: 50,
  conflicts: 200,
  missing_external_id: 100,
  customer_missing: 0,
  failed: 0
} as const

export const seedStripe = async (emulator: StripeEmulatorHandle): Promise<Dataset> => {
  const byExternal = new Map<string, Array<string>>()
  const add = (ext: string | undefined, id: string) => {
    if (ext !== undefined) byExternal.set(ext, [...(byExternal.get(ext) ?? []), id])
  }
  const amStripeIds: Array<string> = []
  const make = async (ext: string | undefined, i: number) => {
    const c = await Effect.runPromise(
      emulator.createCustomer({ name: `Customer ${i}`, email: `c${i}@example.com`, ...(ext !== undefined ? { metadata: { external_id: ext } } : {}) })
    )
    add(ext, c.id)
    return c.id
  }
  let i = 0
  for (let n = 0; n < 2150; n++) await make(`ext-${String(n).padStart(4, "0")}`, i++)
  for (let n = 0; n < 100; n++) await make(`ext-${String(n).padStart(4, "0")}`, i++)
  for (let n = 0; n < 100; n++) await make(undefined, i++)
  for (let n = 0; n < 100; n++) await make(`pc-${String(n).padStart(3, "0")}`, i++)
  for (let n = 0; n < 50; n++) amStripeIds.push(await make(`am-${String(n).padStart(2, "0")}`, i++))
  return { byExternal, amStripeIds, total: i }
}

/** The tenant's Stripe configuration: the emulator's account with the test key. */
export const configureStripe = (scope: TenantScope, emulator: StripeEmulatorHandle) =>
  storeStripeConfig({ apiKey: STRIPE_KEY, accountId: emulator.accountId, syncEnabled: false }).pipe(Effect.provideService(CurrentTenant, scope))

/**
 * Pre-existing FlexPrice state of a tenant (see Dataset) and its Stripe configuration, in one
 * transaction: ~500 rows, which on PostgreSQL would otherwise each wait for their own commit.
 */
export const seedTenant = (scope: TenantScope, data: Dataset, emulator: StripeEmulatorHandle) =>
  Effect.gen(function* () {
    yield* configureStripe(scope, emulator)
    const customers = yield* CustomerRepo
    const mappings = yield* CustomerMappingRepo
    for (let n = 1000; n < 1200; n++) yield* customers.insert({ externalId: `ext-${n}` })
    for (let n = 0; n < 100; n++) {
      const c = yield* customers.insert({ externalId: `pc-${String(n).padStart(3, "0")}` })
      if (c._tag === "Some") yield* mappings.insert({ customerId: c.value.id, providerCustomerId: `cus_elsewhere${n}`, source: "api" })
    }
    for (let n = 0; n < 50; n++) {
      const c = yield* customers.insert({ externalId: `am-${String(n).padStart(2, "0")}` })
      const stripeId = data.amStripeIds[n]
      if (c._tag === "Some" && stripeId !== undefined) yield* mappings.insert({ customerId: c.value.id, providerCustomerId: stripeId, source: "api" })
    }
  }).pipe((seed) => Effect.flatMap(PgClient.PgClient, (sql) => sql.withTransaction(seed)), Effect.provideService(CurrentTenant, scope))

/** Customers and mappings of a tenant, by external id (ids differ between tenants). */
export interface TenantState {
  readonly customers: ReadonlyArray<string>
  readonly mappings: ReadonlyArray<string>
}

export const tenantState = (scope: TenantScope) =>
  Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const customers = yield* sql<{ externalId: string }>`SELECT external_id FROM customers
      WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} ORDER BY external_id`
    const mappings = yield* sql<{ externalId: string; providerCustomerId: string; status: string; source: string }>`
      SELECT c.external_id, m.provider_customer_id, m.status, m.source FROM customer_integration_mappings m
      JOIN customers c ON c.id = m.customer_id
      WHERE m.tenant_id = ${scope.tenantId} AND m.environment_id = ${scope.environmentId}
      ORDER BY c.external_id, m.provider_customer_id`
    const orphanMappings = yield* sql<{ n: string }>`SELECT count(*) AS n FROM customer_integration_mappings m
      WHERE m.tenant_id = ${scope.tenantId} AND m.environment_id = ${scope.environmentId}
        AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = m.customer_id)`
    if (Number(orphanMappings[0]!.n) > 0) throw new Error("mappings without a customer")
    return {
      customers: customers.map((c) => c.externalId),
      mappings: mappings.map((m) => `${m.externalId}→${m.providerCustomerId}:${m.status}:${m.source}`)
    } satisfies TenantState
  })

export const newTenant = (app: App, name: string) =>
  app.run(Effect.flatMap(TenantRepo, (r) => r.create(`${name}-${Math.random().toString(36).slice(2)}`, "test"))).then((t) => ({
    apiKey: t.apiKey,
    scope: { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope
  }))

/** Poll the status endpoint until the job is no longer running. */
export const waitForMigration = async (app: App, apiKey: string, id: string, timeoutMs = 120_000) => {
  const until = Date.now() + timeoutMs
  for (;;) {
    const res = await app.request(apiKey, "GET", `/v1/stripe/migrate/status/${id}`)
    if (res.status !== 200) throw new Error(`status ${res.status}: ${res.text}`)
    if (res.data.status !== "running") return res.data
    if (Date.now() > until) throw new Error(`migration ${id} still running: ${res.text}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Poll a rollback / verification task until it is no longer running. */
export const waitForTask = async (app: App, apiKey: string, taskId: string, timeoutMs = 120_000) => {
  const until = Date.now() + timeoutMs
  for (;;) {
    const res = await app.request(apiKey, "GET", `/v1/stripe/migrate/tasks/${taskId}`)
    if (res.status !== 200) throw new Error(`task status ${res.status}: ${res.text}`)
    if (res.data.status !== "running") return res.data
    if (Date.now() > until) throw new Error(`task ${taskId} still running: ${res.text}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * A started job's outcome: the 202 answer and, when it was started, the finished job. `body` is
 * the finished job's body, or the refusal's; `job` and `started` throw when it was not started.
 */
export interface Outcome<S, J> {
  readonly status: number
  readonly body: unknown
  readonly job: J
  readonly started: S
  readonly error: Answer<S>["error"]
}

const outcome = <S, J>(started: Answer<S>, job: J | undefined): Outcome<S, J> => ({
  status: started.status,
  body: job === undefined ? started.body : job,
  get job(): J {
    if (job === undefined) throw new Error(`not started: ${started.status} ${started.text.slice(0, 300)}`)
    return job
  },
  get started(): S {
    return started.data
  },
  get error() {
    return started.error
  }
})

/** POST /rollback (202 + task), then the finished task. */
export const rollbackAndWait = async (app: App, apiKey: string, migrationId: string) => {
  const started = await app.request(apiKey, "POST", `/v1/stripe/migrate/${migrationId}/rollback`)
  return outcome(started, started.status === 202 ? await waitForTask(app, apiKey, started.data.task_id) : undefined)
}

/** POST a CSV (202 + job), then the finished job's status. */
/** The query string of a CSV import, typed so the path still names its route. */
export type CsvQuery = "" | `?${string}`

export const importCsvAndWait = async (app: App, apiKey: string, csv: string, query: CsvQuery = "") => {
  const started = await app.request(apiKey, "POST", `/v1/stripe/migrate/customers/csv${query}`, undefined, {
    headers: { "content-type": "text/csv" },
    rawBody: csv
  })
  return outcome(started, started.status === 202 ? await waitForMigration(app, apiKey, started.data.migration_id) : undefined)
}

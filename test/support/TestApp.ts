/**
 * The service as one test Layer (#14 item 5), for tests written as effects:
 *
 *   forEachBackend(["pglite", "postgres"], (backend) =>
 *     layer(TestApp.layer({ backend }), { excludeTestServices: true })(`… on ${backend}`, (it) => { it.effect(…) }))
 *
 * It serves the whole app on a loopback port whose `HttpClient` already points at it (as
 * `NodeHttpServer.layerTest`, but bound to 127.0.0.1 rather than every interface of a shared
 * machine), over a fresh copy of the migrated PGlite template or a fresh PostgreSQL database,
 * configured through a `ConfigProvider` (the process environment is neither read for settings nor
 * changed), and gives a typed client made from the API's own definition
 * (`HttpApiClient.make(FlexPriceApi)`) that sends a fresh tenant's key: request and response
 * bodies are the API's Schemas, so a test reads `customer.external_id`, not an untyped JSON body.
 *
 * The app runs on real time: `{ excludeTestServices: true }` keeps @effect/vitest's TestClock
 * (under which its workers' sleeps never end and "now" is 1970) and its silenced logger out of
 * the layer; the layer refuses to start on the TestClock rather than serve a 1970 app.
 *
 * Requests a typed client cannot send (bad JSON, wrong types, hostile bodies, signed webhook
 * deliveries) go through `raw`, whose answers are checked against openapi.json too. Options:
 * `env` (settings), `observe` (a log capture or test telemetry beneath the service, in the test's
 * context); `replica` is a second service on the same PostgreSQL database (its typed client, and
 * `run` for effects on its own services: its lease owner, its caches). Settings start from
 * `testEnv` (test/support/app.ts).
 */
import { HttpApiClient, HttpClient, HttpClientRequest, HttpClientResponse, HttpServer } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import { Clock, Context, Effect, Either, Layer, LogLevel, Predicate, Schema, type Scope } from "effect"
import * as fs from "node:fs"
import { createServer } from "node:http"
import { PgClient } from "@effect/sql-pg"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { FlexPriceApi } from "../../src/http/Api.js"
import { ErrorBody } from "../../src/http/ErrorContract.js"
import { type AppServices, localService } from "../../src/LocalService.js"
import { ElevatedAccess } from "../../src/db/RowSecurity.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { type Backend, freshDataDir, freshPostgresDatabase, OperatorAccess, POSTGRES_URL_VAR, testEnv } from "./app.js"
import { CLICKHOUSE_TEST_DATABASE, CLICKHOUSE_URL_VAR } from "./clickhouse.js"
import { type Contract, contractCheckEnabled, openApiContract } from "./openapiContract.js"

/** The tenant environment the typed client acts for. */
export class TestTenant extends Context.Tag("test/TestTenant")<TestTenant, { readonly apiKey: string; readonly scope: TenantScope }>() {}

/** Statuses whose responses carry no body (the Fetch API refuses to build one with a body). */
const NO_BODY = new Set([101, 204, 205, 304])

/**
 * Every response the client receives is checked against `contract` (openapi.json unless a test
 * passes another) before the client decodes it. The body is read once, checked, and handed on as a
 * fresh response over the same bytes: a response's body is a stream, and a check that read it in
 * place would leave the decoder waiting on a stream already drained.
 */
export const checkedAgainst = (contract: Contract) => <E, R>(client: HttpClient.HttpClient.With<E, R>): HttpClient.HttpClient.With<E, R> =>
  HttpClient.transform(client, (effect: Effect.Effect<HttpClientResponse.HttpClientResponse, E, R>, request) =>
    Effect.flatMap(effect, (response) =>
      Effect.flatMap(Effect.orDie(response.text), (text) => {
        const url = new URL(request.url, "http://test.invalid")
        const contentType = response.headers["content-type"] ?? null
        const problems = contract.check({ method: request.method, url: url.pathname, status: response.status, contentType, text })
        if (problems.length > 0)
          return Effect.dieMessage(`${request.method} ${url.pathname} → ${response.status} does not match openapi.json:\n  ${problems.join("\n  ")}`)
        const copy = new Response(NO_BODY.has(response.status) ? null : text, { status: response.status, headers: new Headers(response.headers) })
        return Effect.succeed(HttpClientResponse.fromWeb(request, copy))
      })
    )
  )

/**
 * The typed client as `apiKey` ("" sends no key); responses checked against openapi.json (or
 * `contract`). It makes no spans of its own: a test capturing the service's spans
 * (`observe: Telemetry.layerTest`) shares their tracer, and the client's spans (URL and query in
 * full) are not the service's.
 */
export const makeClient = (apiKey: string, contract: Contract = openApiContract()) =>
  HttpApiClient.make(FlexPriceApi, {
    transformClient: (client) =>
      (apiKey === "" ? client : HttpClient.mapRequest(client, HttpClientRequest.setHeader("x-api-key", apiKey))).pipe(
        checkedAgainst(contract),
        HttpClient.withTracerDisabledWhen(() => true)
      )
  })

/** The typed client of the API, signed in as `TestTenant`. */
export class ApiClient extends Context.Tag("test/ApiClient")<ApiClient, Effect.Effect.Success<ReturnType<typeof makeClient>>>() {}

/** Another tenant environment on the same service, with its own typed client. */
export const newTenant = (name: string) =>
  Effect.gen(function* () {
    const t = yield* Effect.flatMap(TenantRepo, (r) => r.create(`${name}-${crypto.randomUUID().slice(0, 8)}`, "test"))
    const client = yield* makeClient(t.apiKey)
    return { apiKey: t.apiKey, scope: { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope, client }
  })

/**
 * The failure an API call answered with: one of the API's error classes, whose `_tag` is the
 * status (`Conflict` is 409) and `code` the stable code. The call succeeding, or failing without
 * an API error (transport, decoding), fails the test with what happened instead.
 */
export const apiError = <A, E, R>(call: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.either(call), (result) =>
    Either.isRight(result)
      ? Effect.dieMessage(`expected an API error, the call succeeded: ${JSON.stringify(result.right)}`)
      : isApiError(result.left)
        ? Effect.succeed(result.left)
        : Effect.dieMessage(`expected an API error, the call failed with ${String(result.left)}`)
  )

const isApiError = <E>(e: E): e is Extract<E, { readonly _tag: string; readonly code: string }> =>
  Predicate.hasProperty(e, "_tag") && Predicate.hasProperty(e, "code") && typeof e.code === "string"

/** The service's base URL (`http://127.0.0.1:port`), for senders outside the layer (the Stripe emulator). */
export const serverUrl = HttpServer.HttpServer.pipe(
  Effect.map(({ address }) => (address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : `unix:${address.path}`))
)

/** An answer to a `raw` request: what came over the wire, the error envelope, and a decoder for the success body. */
export interface RawAnswer {
  readonly status: number
  /** Response headers, names in lower case (Retry-After, content-type). */
  readonly headers: Readonly<Record<string, string>>
  readonly text: string
  /** The envelope's `error` (the API's `ErrorBody` schema); undefined when the body is not an error envelope. */
  readonly error: typeof ErrorBody.Type | undefined
  /** The body decoded by one of the API's Schemas; throws (a defect in an effect) naming status and body when it does not decode. */
  readonly as: <A, I>(schema: Schema.Schema<A, I>) => A
}

export interface RawOptions {
  /** `undefined` sends the test tenant's key; "" sends none. */
  readonly apiKey?: string
  readonly headers?: Record<string, string>
  /** sent as is (with content-type application/json unless `headers` says otherwise) */
  readonly body?: string
}

const Envelope = Schema.Struct({ error: ErrorBody })

/**
 * One request exactly as given, for what the typed client refuses to send (malformed JSON, wrong
 * types, oversized bodies, signed webhook deliveries); its answer is checked against openapi.json.
 */
export const raw = (method: "GET" | "POST" | "PUT" | "DELETE", path: string, options: RawOptions = {}) =>
  Effect.gen(function* () {
    const apiKey = options.apiKey ?? (yield* TestTenant).apiKey
    const base = yield* serverUrl
    // fetch, not the Node HttpClient: a server that answers an oversized body with 413 before
    // reading it may close the connection mid-upload, which node:http reports as EPIPE instead of
    // the answer (seen on Node 24); fetch hands over the answer the server sent.
    const response = yield* Effect.orDie(
      Effect.tryPromise(() =>
        fetch(`${base}${path}`, {
          method,
          headers: {
            ...(apiKey === "" ? {} : { "x-api-key": apiKey }),
            ...(options.body === undefined ? {} : { "content-type": "application/json" }),
            ...options.headers
          },
          ...(options.body === undefined ? {} : { body: options.body })
        })
      )
    )
    const text = yield* Effect.orDie(Effect.tryPromise(() => response.text()))
    const contentType = response.headers.get("content-type")
    if (contractCheckEnabled()) openApiContract().assert({ method, url: path, status: response.status, contentType, text })
    const json = Either.try(() => JSON.parse(text) as unknown)
    const error = Either.isRight(json) ? Either.getOrUndefined(Schema.decodeUnknownEither(Envelope)(json.right))?.error : undefined
    const as = <A, I>(schema: Schema.Schema<A, I>): A => {
      const decoded = Either.isRight(json) ? Schema.decodeUnknownEither(schema)(json.right) : Either.left(json.left)
      if (Either.isLeft(decoded)) throw new Error(`${method} ${path} → ${response.status}, not the expected body: ${text.slice(0, 500)}`)
      return decoded.right
    }
    return { status: response.status, headers: Object.fromEntries(response.headers), text, error, as } satisfies RawAnswer
  })

/** A variable the backend's suite was registered for by `forEachBackend` (which fails under CI without it). */
const required = (name: string) =>
  Effect.suspend(() => {
    const value = process.env[name]
    return value === undefined || value === "" ? Effect.dieMessage(`${name} is not set`) : Effect.succeed(value)
  })

/** A copy of the migrated PGlite template, removed on release. */
const pgliteDir = Effect.acquireRelease(Effect.sync(freshDataDir), (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))

/**
 * Where the service keeps its rows, as settings: a copy of the migrated PGlite template; a fresh
 * database on the test PostgreSQL server; or PGlite with events in the test ClickHouse database
 * Each is removed on release.
 */
const storage = (backend: Backend): Effect.Effect<Record<string, string>, never, Scope.Scope> => {
  switch (backend) {
    case "pglite":
      return Effect.map(pgliteDir, (dir) => ({ FLEXPRICE_DATA_DIR: dir }))
    case "postgres":
      return Effect.flatMap(required(POSTGRES_URL_VAR), (server) =>
        Effect.map(
          Effect.acquireRelease(
            Effect.promise(() => freshPostgresDatabase(server)),
            (db) => Effect.promise(() => db.drop().catch(() => undefined))
          ),
          (db) => ({ FLEXPRICE_DATABASE_URL: db.url })
        )
      )
    case "clickhouse":
      return Effect.zipWith(pgliteDir, required(CLICKHOUSE_URL_VAR), (dir, url) => ({
        FLEXPRICE_DATA_DIR: dir,
        FLEXPRICE_CLICKHOUSE_URL: url,
        FLEXPRICE_CLICKHOUSE_DATABASE: CLICKHOUSE_TEST_DATABASE
      }))
  }
}

/** NodeHttpServer.layerTest on the loopback interface only. */
const loopbackServer = HttpServer.layerTestClient.pipe(
  Layer.provide(NodeHttpClient.layerWithoutAgent),
  Layer.provide(NodeHttpClient.makeAgentLayer({ keepAlive: false })),
  Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
)

/** 2000-01-01: a clock before it is @effect/vitest's TestClock, which starts at 0 and stands still. */
const REAL_TIME = 946_684_800_000

const onRealTime = Effect.flatMap(Clock.currentTimeMillis, (now) =>
  now < REAL_TIME
    ? Effect.dieMessage("TestApp.layer is on @effect/vitest's TestClock: build it with layer(TestApp.layer(…), { excludeTestServices: true })")
    : Effect.void
)

export interface LayerOptions<B = never> {
  /** "pglite" (default), "postgres" (a fresh database on FLEXPRICE_TEST_POSTGRES_URL's server) or "clickhouse" */
  readonly backend?: Backend
  /** settings by variable name, over `testEnv`'s (the service's ConfigProvider; the process environment is not read) */
  readonly env?: Record<string, string>
  /**
   * Built first, beneath the service, and kept in the layer: a log
   * capture (`makeCapture().layer`, with FLEXPRICE_TEST_LOG in `env` to let every level through),
   * `Telemetry.layerTest` (its `TelemetryTest` then reaches the tests).
   */
  readonly observe?: Layer.Layer<B>
}

/** The settings the layer's service runs with (its database, master keys): what a second replica needs. */
export class TestSettings extends Context.Tag("test/TestSettings")<TestSettings, Readonly<Record<string, string>>>() {}

/** The whole service on a loopback port under `settings`, with `observe` beneath it. */
const service = <B>(settings: Readonly<Record<string, string>>, observe: Layer.Layer<B>) =>
  localService({
    server: loopbackServer,
    settings,
    processEnvironment: false,
    beside: Layer.empty,
    below: observe,
    logLevel: settings["FLEXPRICE_TEST_LOG"] ? LogLevel.Debug : LogLevel.Warning
  })

export const layer = <B = never>(options: LayerOptions<B> = {}) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      yield* onRealTime
      const db = yield* storage(options.backend ?? "pglite")
      const env = testEnv({ ...db, ...options.env })
      const app = service(env, options.observe ?? (Layer.empty as Layer.Layer<B>))
      const tenant = Layer.effect(
        TestTenant,
        Effect.map(newTenant("test"), ({ apiKey, scope }) => ({ apiKey, scope }))
      )
      const client = Layer.effect(ApiClient, Effect.flatMap(TestTenant, ({ apiKey }) => makeClient(apiKey)))
      return Layer.provideMerge(client, tenant).pipe(Layer.provideMerge(Layer.mergeAll(app, OperatorAccess, Layer.succeed(TestSettings, env))))
    })
  )

/** A second replica of the layer's service: its own process state and port, the same database and keys. */
export class Replica extends Context.Tag("test/Replica")<Replica, {
  /** A typed client of the replica as `apiKey`, its responses checked against openapi.json. */
  readonly client: (apiKey: string) => Effect.Effect<Effect.Effect.Success<ReturnType<typeof makeClient>>>
  /** An effect on the replica's own services (its lease owner, caches), as the table owner like the layer's. */
  readonly run: <A, E>(effect: Effect.Effect<A, E, AppServices | ElevatedAccess>) => Effect.Effect<A, E>
}>() {}

/**
 * `Replica`, for a layer on the PostgreSQL backend (PGlite's directory is one process's):
 * `layer(TestApp.replica.pipe(Layer.provideMerge(TestApp.layer({ backend: "postgres" }))))`.
 */
export const replica = Layer.scoped(
  Replica,
  Effect.gen(function* () {
    const settings = yield* TestSettings
    const context = yield* Layer.build(Layer.merge(service(settings, Layer.empty), OperatorAccess))
    return {
      client: (apiKey: string) => Effect.provide(makeClient(apiKey), context),
      run: <A, E>(effect: Effect.Effect<A, E, AppServices | ElevatedAccess>) => Effect.provide(effect, context)
    }
  })
)

/** Rows of a query on the service's database, as the table owner (column names camelCased). */
export const rows = (query: string) => Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe<Record<string, unknown>>(query))

/** An effect run inside the test tenant's environment (CurrentTenant). */
export const inTestTenant = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(TestTenant, ({ scope }) => Effect.provideService(effect, CurrentTenant, scope))

/**
 * `worker` (a scheduler, a background loop) on the surrounding layer's services as the served app
 * runs it: without the operator access the layer gives the test's own effects, so row security
 * applies to the worker's passes as in production.
 */
export const asServed = <ROut, E, RIn>(worker: Layer.Layer<ROut, E, RIn>): Layer.Layer<ROut, E, RIn> =>
  Layer.unwrapEffect(
    Effect.map(Effect.context<RIn>(), (ctx) => Layer.provide(worker, Layer.succeedContext(Context.omit(ElevatedAccess)(ctx) as Context.Context<RIn>)))
  )

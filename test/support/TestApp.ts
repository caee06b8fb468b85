/**
 * The service as one test Layer (#14 item 5), for tests written as effects: `it.layer(TestApp.layer())`
 * then `it.effect`. It serves the whole app on `NodeHttpServer.layerTest` (a loopback port whose
 * `HttpClient` already points at it) over a fresh copy of the migrated PGlite template, configured
 * through a `ConfigProvider` (the process environment is neither read for settings nor changed),
 * and gives a typed client made from the API's own definition (`HttpApiClient.make(FlexPriceApi)`)
 * that sends a fresh tenant's key: request and response bodies are the API's Schemas, so a test
 * reads `customer.external_id`, not an untyped JSON body.
 *
 * `startTestApp` (test/support/app.ts) stays for the suites that drive raw requests (bad JSON,
 * oversized bodies, wrong headers) and for PostgreSQL/ClickHouse; both share `testEnv`.
 */
import { HttpApiClient, HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer, LogLevel } from "effect"
import * as fs from "node:fs"
import type { TenantScope } from "../../src/domain/Ids.js"
import { FlexPriceApi } from "../../src/http/Api.js"
import { localService } from "../../src/LocalService.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { freshDataDir, OperatorAccess, testEnv } from "./app.js"
import { type Contract, openApiContract } from "./openapiContract.js"

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

/** The typed client as `apiKey`; responses checked against openapi.json (or `contract`). */
export const makeClient = (apiKey: string, contract: Contract = openApiContract()) =>
  HttpApiClient.make(FlexPriceApi, {
    transformClient: (client) => client.pipe(HttpClient.mapRequest(HttpClientRequest.setHeader("x-api-key", apiKey)), checkedAgainst(contract))
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

/** A copy of the migrated template, removed when the layer is released. */
const dataDir = Effect.acquireRelease(Effect.sync(freshDataDir), (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))

export const layer = (options: { readonly env?: Record<string, string> } = {}) =>
  Layer.unwrapScoped(
    Effect.map(dataDir, (dir) => {
      const env = testEnv({ FLEXPRICE_DATA_DIR: dir, ...options.env })
      const app = localService({
        server: NodeHttpServer.layerTest,
        settings: env,
        processEnvironment: false,
        beside: Layer.empty,
        below: Layer.empty,
        logLevel: env["FLEXPRICE_TEST_LOG"] ? LogLevel.Debug : LogLevel.Warning
      })
      const tenant = Layer.effect(
        TestTenant,
        Effect.map(newTenant("test"), ({ apiKey, scope }) => ({ apiKey, scope }))
      )
      const client = Layer.effect(ApiClient, Effect.flatMap(TestTenant, ({ apiKey }) => makeClient(apiKey)))
      return Layer.provideMerge(client, tenant).pipe(Layer.provideMerge(Layer.merge(app, OperatorAccess)))
    })
  )

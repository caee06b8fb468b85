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
import { HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { ConfigProvider, Context, Effect, Layer, Logger, LogLevel } from "effect"
import * as fs from "node:fs"
import { AppLive } from "../../src/App.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { FlexPriceApi } from "../../src/http/Api.js"
import { HttpApiLive } from "../../src/http/Server.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { freshDataDir, OperatorAccess, testEnv } from "./app.js"

/** The tenant environment the typed client acts for. */
export class TestTenant extends Context.Tag("test/TestTenant")<TestTenant, { readonly apiKey: string; readonly scope: TenantScope }>() {}

const makeClient = (apiKey: string) =>
  HttpApiClient.make(FlexPriceApi, { transformClient: HttpClient.mapRequest(HttpClientRequest.setHeader("x-api-key", apiKey)) })

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
      const app = HttpApiLive.pipe(
        Layer.provideMerge(NodeHttpServer.layerTest),
        Layer.provideMerge(AppLive),
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))),
        Layer.provide(Logger.minimumLogLevel(env["FLEXPRICE_TEST_LOG"] ? LogLevel.Debug : LogLevel.Warning))
      )
      const tenant = Layer.effect(
        TestTenant,
        Effect.map(newTenant("test"), ({ apiKey, scope }) => ({ apiKey, scope }))
      )
      const client = Layer.effect(ApiClient, Effect.flatMap(TestTenant, ({ apiKey }) => makeClient(apiKey)))
      return Layer.provideMerge(client, tenant).pipe(Layer.provideMerge(Layer.merge(app, OperatorAccess)))
    })
  )

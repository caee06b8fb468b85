/**
 * A client generated from openapi.json by standard tools — types by openapi-typescript
 * (test/support/generated/api.d.ts, `npm run openapi:types`), calls by openapi-fetch — works end
 * to end against the running service: successes arrive as the documented bodies, errors as the
 * documented envelope. The committed types are what the generator makes of the committed document.
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { FetchHttpClient, HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import createClient, { type Middleware } from "openapi-fetch"
import { expect } from "vitest"
import { Conflict, NotFound } from "../../src/domain/Errors.js"
import { FlexPriceApi } from "../../src/http/Api.js"
import type { paths } from "../support/generated/api.js"
import { openApiContract } from "../support/openapiContract.js"
import * as TestApp from "../support/TestApp.js"
import { serverUrl, TestTenant } from "../support/TestApp.js"

const root = new URL("../../", import.meta.url)

layer(TestApp.layer(), { excludeTestServices: true })("client generated from openapi.json", (it) => {
  /** Every response the client receives also goes through the document's validator. */
  const validated: Array<string> = []
  const contract: Middleware = {
    async onResponse({ request, response }) {
      const url = new URL(request.url)
      const text = await response.clone().text()
      openApiContract().assert({ method: request.method, url: url.pathname + url.search, status: response.status, contentType: response.headers.get("content-type"), text })
      validated.push(`${request.method} ${url.pathname} ${response.status}`)
      return undefined
    }
  }
  /** The generated client of the service, as the test tenant ("" for anonymous). */
  const client = (as: "tenant" | "anonymous" = "tenant") =>
    Effect.gen(function* () {
      const baseUrl = yield* serverUrl
      const { apiKey } = yield* TestTenant
      const c = createClient<paths>({ baseUrl, ...(as === "tenant" ? { headers: { "x-api-key": apiKey } } : {}) })
      c.use(contract)
      return c
    })

  it.effect("creates, reads, lists and deletes a customer through the generated types", () =>
    Effect.gen(function* () {
      const api = yield* client()
      const created = yield* Effect.promise(() => api.POST("/v1/customers", { body: { external_id: "gen-1", name: "Generated", metadata: { plan: "pro" } } }))
      expect(created.response.status).toBe(201)
      expect(created.error).toBeUndefined()
      const id = created.data?.id ?? ""
      expect(created.data).toMatchObject({ external_id: "gen-1", name: "Generated", metadata: { plan: "pro" } })
      const read = yield* Effect.promise(() => api.GET("/v1/customers/{id}", { params: { path: { id } } }))
      expect(read.data?.id).toBe(id)
      const listed = yield* Effect.promise(() => api.GET("/v1/customers", { params: { query: { external_id: "gen-1", limit: "10" } } }))
      expect(listed.data?.customers.map((c) => c.id)).toEqual([id])
      const deleted = yield* Effect.promise(() => api.DELETE("/v1/customers/{id}", { params: { path: { id } } }))
      expect(deleted.data).toEqual({ id, deleted: true })
    })
  )

  it.effect("receives errors as the typed envelope", () =>
    Effect.gen(function* () {
      const api = yield* client()
      const missing = yield* Effect.promise(() => api.GET("/v1/customers/{id}", { params: { path: { id: "cust_none" } } }))
      expect(missing.response.status).toBe(404)
      expect(missing.data).toBeUndefined()
      expect(missing.error?.error.code).toBe("customer_not_found")
      yield* Effect.promise(() => api.POST("/v1/customers", { body: { external_id: "gen-dup" } }))
      const duplicate = yield* Effect.promise(() => api.POST("/v1/customers", { body: { external_id: "gen-dup" } }))
      expect([duplicate.response.status, duplicate.error?.error.code]).toEqual([409, "customer_exists"])
      const meter = yield* Effect.promise(() => api.POST("/v1/meters", { body: { name: "g", event_name: "g", aggregation: { type: "SUM", field: "" } } }))
      expect([meter.response.status, meter.error?.error.code]).toEqual([400, "invalid_request"])
      const anonymous = yield* client("anonymous")
      const unauthorized = yield* Effect.promise(() => anonymous.GET("/v1/meters"))
      expect([unauthorized.response.status, unauthorized.error?.error.code]).toEqual([401, "missing_api_key"])
      expect(validated.length).toBeGreaterThanOrEqual(5)
    })
  )

  it.effect("the Effect client derived from the same API definition decodes the envelope into the typed errors", () =>
    Effect.gen(function* () {
      const baseUrl = yield* serverUrl
      const { apiKey } = yield* TestTenant
      // its own client over fetch, as a consumer of the API would build it (not the layer's)
      const [missing, duplicate] = yield* Effect.gen(function* () {
        const api = yield* HttpApiClient.make(FlexPriceApi, {
          baseUrl,
          transformClient: HttpClient.mapRequest(HttpClientRequest.setHeader("x-api-key", apiKey))
        })
        const notFound = yield* Effect.flip(api.customers.get({ path: { id: "cust_none" } }))
        yield* api.customers.create({ payload: { external_id: "eff-dup" } })
        const conflict = yield* Effect.flip(api.customers.create({ payload: { external_id: "eff-dup" } }))
        return [notFound, conflict] as const
      }).pipe(Effect.provide(FetchHttpClient.layer))
      expect(missing).toBeInstanceOf(NotFound)
      expect(missing).toMatchObject({ code: "customer_not_found", details: { id: "cust_none" } })
      expect(duplicate).toBeInstanceOf(Conflict)
      expect(duplicate).toMatchObject({ code: "customer_exists" })
    })
  )

  it.effect("test/support/generated/api.d.ts is what openapi-typescript makes of openapi.json (`npm run openapi:types`)", () =>
    Effect.promise(async () => {
      const cli = new URL("node_modules/openapi-typescript/bin/cli.js", root).pathname
      // --check: exit 1 when the output would differ from the committed file
      const run = promisify(execFile)(process.execPath, [cli, "openapi.json", "-o", "test/support/generated/api.d.ts", "--check"], { cwd: root.pathname })
      await expect(run).resolves.toBeDefined()
    })
  )
})

/**
 * The committed openapi.json is exactly what the code generates, and every route the API
 * serves is in it (regenerate with `npm run openapi`).
 */
import { HttpApi } from "@effect/platform"
import * as fs from "node:fs"
import { describe, expect, it } from "vitest"
import { FlexPriceApi } from "../../src/http/Api.js"
import { openApiDocument, openApiText } from "../../src/http/OpenApiDocument.js"

const committed = () => fs.readFileSync(new URL("../../openapi.json", import.meta.url), "utf8")

describe("OpenAPI document", () => {
  it("openapi.json matches the document generated from the HttpApi definitions", () => {
    expect(committed(), "openapi.json is stale: run `npm run openapi` and commit it").toBe(openApiText())
  })

  it("documents every endpoint with its method, path parameters and responses", () => {
    const doc = JSON.parse(committed()) as { paths: Record<string, Record<string, { responses?: Record<string, unknown> }>> }
    const endpoints: Array<{ method: string; path: string }> = []
    HttpApi.reflect(FlexPriceApi, {
      onGroup: () => {},
      onEndpoint: ({ endpoint }) => endpoints.push({ method: endpoint.method.toLowerCase(), path: endpoint.path })
    })
    expect(endpoints.length).toBeGreaterThan(20)
    for (const { method, path } of endpoints) {
      const openApiPath = path.replace(/:(\w+)/g, "{$1}")
      const operation = doc.paths[openApiPath]?.[method]
      expect(operation, `${method.toUpperCase()} ${path} is not in openapi.json`).toBeDefined()
      expect(Object.keys(operation?.responses ?? {}).length, `${method.toUpperCase()} ${path} has no responses`).toBeGreaterThan(0)
    }
    // nothing documented that the API does not serve
    const served = new Set(endpoints.map((e) => `${e.method} ${e.path.replace(/:(\w+)/g, "{$1}")}`))
    for (const [p, ops] of Object.entries(doc.paths)) for (const m of Object.keys(ops)) expect(served.has(`${m} ${p}`), `${m} ${p}`).toBe(true)
    expect(openApiDocument().info.title).toBe("FlexPrice Stripe Sync")
  })
})

/**
 * The API answers what openapi.json says it answers: ordinary and bad requests (400 decoding,
 * malformed JSON, bad text, 401, 404, 405, 409, 413) each validated with ajv against the
 * committed document — status documented for the route, content type, body schema — and the
 * error components of the document are exactly the envelope the server sends.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { expect } from "vitest"
import { makeContract, openApiContract } from "../support/openapiContract.js"
import * as TestApp from "../support/TestApp.js"
import { serverUrl, TestTenant } from "../support/TestApp.js"

const MAX_BODY = 4096

interface Exchange {
  readonly method: string
  readonly url: string
  readonly status: number
  readonly contentType: string | null
  readonly text: string
  readonly body: unknown
}

layer(TestApp.layer({ env: { FLEXPRICE_MAX_BODY_BYTES: String(MAX_BODY) } }), { excludeTestServices: true })("responses against openapi.json", (it) => {
  const seen: Array<Exchange> = []

  /** Raw fetch (not TestApp.raw or the typed client, which assert themselves): this test collects every mismatch at once. */
  const send = (method: string, url: string, options: { body?: unknown; raw?: string; apiKey?: string } = {}) =>
    Effect.gen(function* () {
      const key = options.apiKey ?? (yield* TestTenant).apiKey
      const base = yield* serverUrl
      return yield* Effect.promise(() => exchange(base, key, method, url, options))
    })

  const exchange = async (base: string, key: string, method: string, url: string, options: { body?: unknown; raw?: string }): Promise<Exchange> => {
    const payload = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body))
    const res = await fetch(`${base}${url}`, {
      method,
      headers: { ...(key === "" ? {} : { "x-api-key": key }), ...(payload === undefined ? {} : { "content-type": "application/json" }) },
      ...(payload === undefined ? {} : { body: payload })
    })
    const text = await res.text()
    let body: unknown = text
    try {
      body = text === "" ? undefined : JSON.parse(text)
    } catch {
      // kept as text
    }
    const answer = { method, url, status: res.status, contentType: res.headers.get("content-type"), text, body }
    seen.push(answer)
    return answer
  }
  const error = (e: Exchange) => (e.body as { error: { code: string; message: string; details?: unknown } }).error

  it.effect("answers 27 ordinary and bad requests with documented statuses, content types and bodies", () =>
    Effect.gen(function* () {
      expect((yield* send("GET", "/healthz")).status).toBe(200)
      expect((yield* send("GET", "/readyz")).status).toBe(200)
      const created = yield* send("POST", "/v1/customers", { body: { external_id: "oa-1", name: "A" } })
      expect(created.status).toBe(201)
      const id = (created.body as { id: string }).id
      expect((yield* send("GET", `/v1/customers/${id}`)).status).toBe(200)
      expect((yield* send("GET", "/v1/customers?limit=5")).status).toBe(200)
      expect((yield* send("PUT", `/v1/customers/${id}`, { body: { email: "a@example.com" } })).status).toBe(200)
      const meter = yield* send("POST", "/v1/meters", { body: { name: "m", event_name: "oa", aggregation: { type: "COUNT" } } })
      expect(meter.status).toBe(201)
      expect((yield* send("GET", "/v1/meters")).status).toBe(200)
      const ts = new Date(Date.now() - 2 * 3600_000).toISOString()
      expect((yield* send("POST", "/v1/events", { body: { event_id: "oa-e1", event_name: "oa", external_customer_id: "oa-1", timestamp: ts } })).status).toBe(202)
      expect((yield* send("POST", "/v1/events/bulk", { body: { events: [{ event_id: "oa-e2", event_name: "oa", external_customer_id: "oa-1", timestamp: ts }] } })).status).toBe(202)
      expect((yield* send("GET", "/v1/events?external_customer_id=oa-1")).status).toBe(200)

      const duplicate = yield* send("POST", "/v1/customers", { body: { external_id: "oa-1" } })
      expect([duplicate.status, error(duplicate).code]).toEqual([409, "customer_exists"])
      const wrongType = yield* send("POST", "/v1/customers", { body: { external_id: 5 } })
      expect([wrongType.status, error(wrongType).code]).toEqual([400, "invalid_request"])
      expect(error(wrongType).message).toBe("external_id: expected a string, got 5")
      const missing = yield* send("POST", "/v1/customers", { body: {} })
      expect([missing.status, error(missing).code, error(missing).message]).toEqual([400, "invalid_request", "external_id: is required"])
      const badQuery = yield* send("GET", "/v1/customers?limit=abc")
      expect([badQuery.status, error(badQuery).code]).toEqual([400, "invalid_request"])
      expect(error(badQuery).message).toMatch(/^limit: /)
      const malformed = yield* send("POST", "/v1/customers", { raw: "{" })
      expect([malformed.status, error(malformed).code]).toEqual([400, "malformed_json"])
      const nul = yield* send("GET", "/v1/customers/a%00b")
      expect([nul.status, error(nul).code]).toEqual([400, "invalid_text"])
      const noKey = yield* send("GET", "/v1/customers", { apiKey: "" })
      expect([noKey.status, error(noKey).code]).toEqual([401, "missing_api_key"])
      const badKey = yield* send("GET", "/v1/customers", { apiKey: "fp_nope" })
      expect([badKey.status, error(badKey).code]).toEqual([401, "invalid_api_key"])
      const unknownCustomer = yield* send("GET", "/v1/customers/cust_nope")
      expect([unknownCustomer.status, error(unknownCustomer).code]).toEqual([404, "customer_not_found"])
      const noRoute = yield* send("GET", "/v1/nowhere")
      expect([noRoute.status, error(noRoute).code]).toEqual([404, "not_found"])
      const wrongMethod = yield* send("PATCH", "/v1/customers")
      expect([wrongMethod.status, error(wrongMethod).code]).toEqual([405, "method_not_allowed"])
      const tooLarge = yield* send("POST", "/v1/customers", { body: { external_id: "big", name: "x".repeat(MAX_BODY) } })
      expect([tooLarge.status, error(tooLarge).code]).toEqual([413, "payload_too_large"])
      const badMeter = yield* send("POST", "/v1/meters", { body: { name: "x", event_name: "x", aggregation: { type: "AVG" } } })
      expect([badMeter.status, error(badMeter).code]).toEqual([400, "invalid_request"])
      const badEvent = yield* send("POST", "/v1/events", { body: { event_name: "oa" } })
      expect(badEvent.status).toBe(400)
      const unsignedWebhook = yield* send("POST", "/webhooks/stripe", { raw: "{}", apiKey: "" })
      expect(unsignedWebhook.status).toBe(400)
      expect((yield* send("DELETE", `/v1/customers/${id}`)).status).toBe(200)

      const contract = openApiContract()
      const mismatches = seen.flatMap((e) => contract.check(e).map((p) => `${e.method} ${e.url} → ${e.status}: ${p}`))
      expect(seen.length).toBe(27)
      expect(mismatches).toEqual([])
    })
  )

  it.effect("names the field and what was expected when a request does not decode, never the schema's TypeScript type", () =>
    Effect.gen(function* () {
      const nested = yield* send("POST", "/v1/meters", { body: { name: "x", event_name: "x", aggregation: 5 } })
      expect(nested.status).toBe(400)
      expect(error(nested).message).toBe("aggregation: expected an object, got 5")
      const notObject = yield* send("POST", "/v1/customers", { body: [1] })
      expect(error(notObject).message).toBe("request: expected an object, got [1]")
      const literal = yield* send("POST", "/v1/meters", { body: { name: "x", event_name: "x", aggregation: { type: "AVG" } } })
      expect(error(literal).message).toBe('aggregation.type: expected "COUNT" or "SUM" or "MAX" or "LATEST", got "AVG"')
      // a secret in a field of the wrong shape is not echoed, and a large value is cut
      const key = `sk_live_${"a1B2c3D4e5".repeat(60)}`
      const secret = yield* send("POST", "/v1/customers", { body: { external_id: "s", email: key } })
      expect(error(secret).message).toMatch(/^email: expected a string at most 500 character\(s\) long or null, got /)
      expect(error(secret).message).not.toContain("a1B2c3D4e5")
      expect(error(secret).message.length).toBeLessThan(200)
      for (const e of [nested, notObject, literal, secret]) expect(error(e).message).not.toMatch(/readonly|ReadonlyArray|minLength|\{ /)
      expect(error(nested).details).toMatchObject({ issues: [{ path: ["aggregation"], message: "aggregation: expected an object, got 5" }] })
    })
  )

  it.effect("the error components of openapi.json are exactly the envelope, for every documented error status", () =>
    Effect.sync(() => {
      const doc = JSON.parse(fs.readFileSync(new URL("../../openapi.json", import.meta.url), "utf8")) as {
        paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: { $ref?: string } }> }> }>>
        components: { schemas: Record<string, Record<string, unknown>> }
      }
      const envelope = {
        type: "object",
        required: ["error"],
        properties: {
          error: {
            type: "object",
            required: ["code", "message"],
            properties: {
              code: { type: "string" },
              message: { type: "string" },
              details: {}
            },
            additionalProperties: false
          }
        },
        additionalProperties: false
      }
      const strip = (v: unknown): unknown =>
        Array.isArray(v)
          ? v.map(strip)
          : typeof v === "object" && v !== null
          ? Object.fromEntries(Object.entries(v).filter(([k]) => !["description", "title", "$id"].includes(k)).map(([k, x]) => [k, strip(x)]))
          : v
      const errorRefs = new Set<string>()
      for (const ops of Object.values(doc.paths))
        for (const op of Object.values(ops))
          for (const [status, response] of Object.entries(op.responses))
            if (Number(status) >= 400) {
              const schema = response.content?.["application/json"]?.schema
              expect(schema?.$ref, `${status} must be one error component`).toMatch(/^#\/components\/schemas\//)
              errorRefs.add(schema!.$ref!)
            }
      expect(errorRefs.size).toBeGreaterThanOrEqual(10)
      for (const ref of errorRefs) expect(strip(doc.components.schemas[ref.split("/").pop()!]), ref).toEqual(envelope)
    })
  )

  it.effect("the validator refuses what the document does not describe (it can fail)", () =>
    Effect.sync(() => {
      const contract = makeContract(fs.readFileSync(new URL("../../openapi.json", import.meta.url), "utf8"))
      const json = "application/json"
      // the platform's own encoding of a typed error, as the server answered before the error contract
      expect(contract.check({ method: "GET", url: "/v1/customers/x", status: 404, contentType: json, text: '{"_tag":"NotFound","code":"customer_not_found","message":"m"}' })).not.toEqual([])
      expect(contract.check({ method: "GET", url: "/v1/customers/x", status: 404, contentType: json, text: '{"error":{"code":"c","message":"m","extra":1}}' })).not.toEqual([])
      expect(contract.check({ method: "GET", url: "/v1/customers/x", status: 418, contentType: json, text: '{"error":{"code":"c","message":"m"}}' })).not.toEqual([])
      expect(contract.check({ method: "GET", url: "/v1/customers/x", status: 404, contentType: "text/plain", text: '{"error":{"code":"c","message":"m"}}' })).not.toEqual([])
      expect(contract.check({ method: "GET", url: "/v1/nowhere", status: 200, contentType: json, text: "{}" })).not.toEqual([])
      expect(contract.check({ method: "GET", url: "/healthz", status: 200, contentType: json, text: '{"status":"fine"}' })).not.toEqual([])
      expect(contract.check({ method: "GET", url: "/v1/customers/x", status: 404, contentType: json, text: '{"error":{"code":"c","message":"m","details":{"id":"x"}}}' })).toEqual([])
    })
  )
})

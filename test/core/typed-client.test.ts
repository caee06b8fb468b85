/**
 * The API through its typed client on the TestApp layer (#14 item 5): bodies are the API's own
 * Schemas on both sides, so these checks read fields, not untyped JSON.
 */
import { expect, layer } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import * as fs from "node:fs"
import { makeContract } from "../support/openapiContract.js"
import { ApiClient, layer as testApp, makeClient, newTenant, TestTenant } from "../support/TestApp.js"

type Doc = { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>> }

layer(testApp(), { excludeTestServices: true })("the API through its typed client", (it) => {
  it.effect("customers: create, read, update, list by external id, delete; another tenant sees none of it", () =>
    Effect.gen(function* () {
      const api = yield* ApiClient
      const externalId = `ext-${crypto.randomUUID()}`
      const created = yield* api.customers.create({ payload: { external_id: externalId, name: "Ada", metadata: { plan: "pro" } } })
      expect([created.external_id, created.name, created.metadata]).toEqual([externalId, "Ada", { plan: "pro" }])
      expect(yield* api.customers.get({ path: { id: created.id } })).toEqual(created)
      const updated = yield* api.customers.update({ path: { id: created.id }, payload: { email: "ada@example.com" } })
      expect([updated.email, updated.name]).toEqual(["ada@example.com", "Ada"])
      const listed = yield* api.customers.list({ urlParams: { external_id: externalId } })
      expect(listed.customers.map((c) => c.id)).toEqual([created.id])

      const other = yield* newTenant("typed-other")
      const crossed = yield* Effect.flip(other.client.customers.get({ path: { id: created.id } }))
      expect(crossed._tag).toBe("NotFound")
      expect((yield* other.client.customers.list({ urlParams: {} })).customers).toEqual([])

      expect(yield* api.customers.delete({ path: { id: created.id } })).toEqual({ id: created.id, deleted: true })
      expect((yield* Effect.flip(api.customers.get({ path: { id: created.id } })))._tag).toBe("NotFound")
    })
  )

  it.effect("events: a 20-digit quantity with 9 decimals comes back as the literal it was sent as", () =>
    Effect.gen(function* () {
      const api = yield* ApiClient
      const tenant = yield* TestTenant
      const customer = `ext-${crypto.randomUUID()}`
      yield* api.meters.create({ payload: { name: "tokens", event_name: "llm", aggregation: { type: "SUM", field: "tokens" } } })
      const quantity = "99999999999999999999.123456789"
      const ingested = yield* api.events.ingest({
        payload: { event_id: "e-1", event_name: "llm", external_customer_id: customer, properties: { tokens: quantity } }
      })
      expect([ingested.accepted, ingested.duplicates, ingested.rejected]).toEqual([1, 0, []])
      const again = yield* api.events.ingest({ payload: { event_id: "e-1", event_name: "llm", external_customer_id: customer, properties: { tokens: quantity } } })
      expect([again.accepted, again.duplicates]).toEqual([0, 1])
      const events = yield* api.events.list({ urlParams: { external_customer_id: customer } })
      expect(events.events.map((e) => [e.event_id, e.properties])).toEqual([["e-1", { tokens: quantity }]])
      expect(tenant.apiKey).toMatch(/^fp_/)
    })
  )

  it.effect("a response openapi.json does not describe fails the typed call, though the client could decode it", () =>
    Effect.gen(function* () {
      const { apiKey } = yield* TestTenant
      const doc = JSON.parse(fs.readFileSync(new URL("../../openapi.json", import.meta.url), "utf8")) as Doc
      const list = doc.paths["/v1/customers"]?.["get"]?.responses["200"]?.content?.["application/json"]
      expect(list).toBeDefined()
      // a document that says the customer list also carries a required `total`, which the server does not send
      list!.schema = { type: "object", required: ["customers", "total"], properties: { customers: { type: "array" }, total: { type: "integer" } } }
      const checkedByOther = yield* makeClient(apiKey, makeContract(JSON.stringify(doc)))
      const exit = yield* Effect.exit(checkedByOther.customers.list({ urlParams: {} }))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      const why = Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""
      expect(why).toContain("GET /v1/customers → 200 does not match openapi.json")
      expect(why).toContain("total")
      // the same call checked against the committed document passes, and its body is still decoded
      const checked = yield* makeClient(apiKey)
      expect(Array.isArray((yield* checked.customers.list({ urlParams: {} })).customers)).toBe(true)
    })
  )
})

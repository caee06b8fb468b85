/**
 * Text and timestamps the database cannot keep exactly are refused at the edge with 400 and the
 * field: NUL and unpaired surrogates in ids, names, emails, metadata keys, cursors, path ids and
 * event fields; year-0000 timestamps per event (the rest of the bulk is stored). Bodies: malformed
 * JSON → malformed_json, over the cap → 413, 10,000-deep → 400. Never a 5xx that invites retries.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { SqlError } from "@effect/sql/SqlError"
import { orUnavailable } from "../../src/http/Errors.js"
import { forEachBackend, startTestApp, type Backend, type TestApp } from "../support/app.js"

const NUL = "\u0000"
const LONE = "\ud800"

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`bad characters and values on ${backend}`, () => {
    let app: TestApp
    beforeAll(async () => {
      app = await startTestApp({ backend, env: { FLEXPRICE_MAX_BODY_BYTES: "65536" } })
    })
    afterAll(() => app?.dispose())

    const customerCount = async () => (await app.request("GET", "/v1/customers?limit=1000")).data.customers.length as number

    it("refuses NUL and lone surrogates in customer fields and metadata keys with the field", async () => {
      const before = await customerCount()
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ external_id: `a${NUL}b` }, "external_id"],
        [{ external_id: `a${LONE}` }, "external_id"],
        [{ external_id: "ok-1", name: `n${NUL}` }, "name"],
        [{ external_id: "ok-2", email: `e${LONE}@x.test` }, "email"],
        [{ external_id: "ok-3", metadata: { [`k${NUL}`]: "v" } }, "metadata"],
        [{ external_id: "ok-4", metadata: { plan: `v${LONE}` } }, "metadata.plan"]
      ]
      for (const [body, field] of cases) {
        // JSON.stringify writes a lone surrogate as the escape \ud800: what a client sends
        const res = await app.request("POST", "/v1/customers", body)
        expect(res.status, JSON.stringify(body)).toBe(400)
        expect(res.error.code).toBe("invalid_text")
        expect(res.error.details).toMatchObject({ field: expect.stringContaining(field) })
      }
      const created = await app.request("POST", "/v1/customers", { external_id: "bt-ok" })
      const put = await app.request("PUT", `/v1/customers/${created.data.id}`, { name: `x${NUL}` })
      expect([put.status, put.error.code]).toEqual([400, "invalid_text"])
      expect(await customerCount()).toBe(before + 1)
    })

    it("refuses NUL and invalid UTF-8 in path ids, cursors and query values", async () => {
      for (const p of [
        "/v1/customers/cust_%00x",
        "/v1/customers?cursor=a%00b",
        "/v1/customers?external_id=%00",
        "/v1/customers?cursor=%ED%A0%80",
        "/v1/events?cursor=x%00",
        "/v1/meters/mtr_%00"
      ]) {
        const res = await app.request("GET", p)
        expect(res.status, p).toBe(400)
        expect(res.error.code).toBe("invalid_text")
      }
    })

    it("rejects bad event text and out-of-range timestamps per event; the rest of the bulk is stored", async () => {
      const ts = new Date(Date.now() - 2 * 3600_000).toISOString()
      const ev = (id: string, extra: Record<string, unknown> = {}) => ({ event_id: id, event_name: "bt", external_customer_id: "bt-c", timestamp: ts, ...extra })
      const res = await app.request("POST", "/v1/events/bulk", {
        events: [
          ev("bt-good-1"),
          ev(`bt-nul${NUL}`),
          ev("bt-lone", { external_customer_id: `c${LONE}` }),
          ev("bt-y0", { timestamp: "0000-01-01T00:00:00Z" }),
          ev("bt-y9999", { timestamp: "9999-12-31T23:59:59Z" }),
          ev("bt-name", { event_name: `n${NUL}` }),
          ev("bt-good-2")
        ]
      })
      expect(res.status).toBe(202)
      expect(res.data.accepted).toBe(2)
      expect(res.data.rejected.map((r) => [r.index, r.code])).toEqual([
        [1, "invalid_text"],
        [2, "invalid_text"],
        [3, "timestamp_out_of_range"],
        [4, "timestamp_out_of_range"],
        [5, "invalid_text"]
      ])
      expect(res.data.rejected[1].reason).toContain("external_customer_id")
      const single = await app.request("POST", "/v1/events", ev("bt-single", { timestamp: "0000-06-01T00:00:00Z" }))
      expect([single.status, single.error.code]).toEqual([400, "timestamp_out_of_range"])
      const listed = await app.request("GET", "/v1/events?external_customer_id=bt-c")
      expect(listed.data.events.map((e) => e.event_id).sort()).toEqual(["bt-good-1", "bt-good-2"])
      const range = await app.request("GET", "/v1/events?from=0000-01-01T00:00:00Z")
      expect([range.status, range.error.code]).toEqual([400, "invalid_parameter"])
      // the window and cursor schemas keep their own codes wherever they are used; a wrong type, a
      // missing bound or another parameter's refusal is the generic invalid_request
      for (const [path, code] of [
        ["/v1/events?to=10000-01-01T00:00:00Z", "invalid_parameter"],
        ["/v1/events?from=yesterday", "invalid_parameter"],
        ["/v1/stripe/sync/batches?from=0000-12-31T23:59:59Z", "invalid_parameter"],
        ["/v1/stripe/sync/reconciliation?from=2025-01-01&to=2025-01-02T00:00:00Z", "invalid_parameter"],
        ["/v1/events?cursor=nonsense", "invalid_cursor"],
        ["/v1/stripe/sync/batches?cursor=nonsense", "invalid_cursor"],
        ["/v1/events?from=2025-01-01T00:00:00Z&limit=0", "invalid_request"],
        ["/v1/stripe/sync/reconciliation?to=2025-01-02T00:00:00Z", "invalid_request"]
      ] as const) {
        const res = await app.request("GET", path)
        expect([res.status, res.error.code], path).toEqual([400, code])
      }
      const wrongType = await app.request("POST", "/v1/stripe/sync/manual", { window_start: 5, window_end: "2025-01-01T00:00:00Z" })
      expect([wrongType.status, wrongType.error.code]).toEqual([400, "invalid_request"])
      const badStart = await app.request("POST", "/v1/stripe/sync/manual", { window_start: "soon", window_end: "2025-01-01T00:00:00Z" })
      expect([badStart.status, badStart.error.code, badStart.error.details]).toEqual([400, "invalid_parameter", { parameter: "window_start" }])
    })

    it("answers malformed JSON with malformed_json, an over-cap body with 413, 10,000-deep JSON with 400", async () => {
      for (const p of ["/v1/customers", "/v1/meters", "/v1/stripe/config/test"]) {
        const res = await app.request("POST", p, undefined, { rawBody: '{"external_id": "x",' })
        expect([res.status, res.error.code], p).toEqual([400, "malformed_json"])
      }
      const big = await app.request("POST", "/v1/customers", undefined, { rawBody: JSON.stringify({ external_id: "big", name: "x".repeat(70_000) }) })
      expect([big.status, big.error.code]).toEqual([413, "payload_too_large"])
      const deep = "[".repeat(10_000) + "]".repeat(10_000)
      for (const p of ["/v1/customers", "/v1/events", "/v1/events/bulk"]) {
        const res = await app.request("POST", p, undefined, { rawBody: `{"external_id":"deep","metadata":${deep}}`.replace("metadata", p.includes("events") ? "properties" : "metadata") })
        expect(res.status, p).toBe(400)
        expect(["nesting_too_deep", "malformed_json"]).toContain(res.error.code)
      }
      const health = await app.request("GET", "/healthz")
      expect(health.status).toBe(200)
    })

    it("maps a database data error (SQLSTATE class 22) to 400 invalid_value, other failures stay 503", async () => {
      const outcome = (q: (sql: PgClient.PgClient) => Effect.Effect<unknown, SqlError>) => app.run(Effect.flip(orUnavailable(Effect.flatMap(PgClient.PgClient, q))))
      const data = await outcome((sql) => sql`SELECT '0000-01-01T00:00:00Z'::timestamptz AS t`)
      expect(data).toMatchObject({ _tag: "InvalidInput", code: "invalid_value", details: { sqlstate: expect.stringMatching(/^22/) } })
      const other = await outcome((sql) => sql`SELECT * FROM no_such_table`)
      expect([other._tag, other.code]).toEqual(["ServiceUnavailable", "database_unavailable"])
    })
  })
})

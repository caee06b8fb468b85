/**
 * Text and timestamps the database cannot keep exactly are refused at the edge with 400 and the
 * field: NUL and unpaired surrogates in ids, names, emails, metadata keys, cursors, path ids and
 * event fields; year-0000 timestamps per event (the rest of the bulk is stored). Bodies: malformed
 * JSON → malformed_json, over the cap → 413, 10,000-deep → 400. Never a 5xx that invites retries.
 */
import { PgClient } from "@effect/sql-pg"
import type { SqlError } from "@effect/sql/SqlError"
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { IngestResult } from "../../src/domain/Models.js"
import { orUnavailable } from "../../src/http/Errors.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, raw } from "../support/TestApp.js"

const NUL = "\u0000"
const LONE = "\ud800"

/**
 * Bad text goes through `raw` as JSON.stringify writes it (a lone surrogate as the escape \ud800,
 * NUL as \u0000): what a client sends, exactly, whatever the typed client's Schemas would do.
 */
const post = (path: string, body: unknown) => raw("POST", path, { body: JSON.stringify(body) })

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(TestApp.layer({ backend, env: { FLEXPRICE_MAX_BODY_BYTES: "65536" } }), { excludeTestServices: true })(`bad characters and values on ${backend}`, (it) => {
    const customerCount = Effect.flatMap(ApiClient, (api) => Effect.map(api.customers.list({ urlParams: { limit: 1000 } }), (l) => l.customers.length))

    it.effect("refuses NUL and lone surrogates in customer fields and metadata keys with the field", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const before = yield* customerCount
        const cases: Array<[Record<string, unknown>, string]> = [
          [{ external_id: `a${NUL}b` }, "external_id"],
          [{ external_id: `a${LONE}` }, "external_id"],
          [{ external_id: "ok-1", name: `n${NUL}` }, "name"],
          [{ external_id: "ok-2", email: `e${LONE}@x.test` }, "email"],
          [{ external_id: "ok-3", metadata: { [`k${NUL}`]: "v" } }, "metadata"],
          [{ external_id: "ok-4", metadata: { plan: `v${LONE}` } }, "metadata.plan"]
        ]
        for (const [body, field] of cases) {
          const res = yield* post("/v1/customers", body)
          expect(res.status, JSON.stringify(body)).toBe(400)
          expect(res.error?.code).toBe("invalid_text")
          expect(res.error?.details).toMatchObject({ field: expect.stringContaining(field) })
        }
        const created = yield* api.customers.create({ payload: { external_id: "bt-ok" } })
        const put = yield* raw("PUT", `/v1/customers/${created.id}`, { body: JSON.stringify({ name: `x${NUL}` }) })
        expect([put.status, put.error?.code]).toEqual([400, "invalid_text"])
        expect(yield* customerCount).toBe(before + 1)
      })
    )

    it.effect("refuses NUL and invalid UTF-8 in path ids, cursors and query values", () =>
      Effect.gen(function* () {
        for (const p of [
          "/v1/customers/cust_%00x",
          "/v1/customers?cursor=a%00b",
          "/v1/customers?external_id=%00",
          "/v1/customers?cursor=%ED%A0%80",
          "/v1/events?cursor=x%00",
          "/v1/meters/mtr_%00"
        ]) {
          const res = yield* raw("GET", p)
          expect(res.status, p).toBe(400)
          expect(res.error?.code).toBe("invalid_text")
        }
      })
    )

    it.effect("rejects bad event text and out-of-range timestamps per event; the rest of the bulk is stored", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const ts = new Date(Date.now() - 2 * 3600_000).toISOString()
        const ev = (id: string, extra: Record<string, unknown> = {}) => ({ event_id: id, event_name: "bt", external_customer_id: "bt-c", timestamp: ts, ...extra })
        const res = yield* post("/v1/events/bulk", {
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
        const result = res.as(IngestResult)
        expect(result.accepted).toBe(2)
        expect(result.rejected.map((r) => [r.index, r.code])).toEqual([
          [1, "invalid_text"],
          [2, "invalid_text"],
          [3, "timestamp_out_of_range"],
          [4, "timestamp_out_of_range"],
          [5, "invalid_text"]
        ])
        expect(result.rejected[1]?.reason).toContain("external_customer_id")
        const single = yield* post("/v1/events", ev("bt-single", { timestamp: "0000-06-01T00:00:00Z" }))
        expect([single.status, single.error?.code]).toEqual([400, "timestamp_out_of_range"])
        const listed = yield* api.events.list({ urlParams: { external_customer_id: "bt-c" } })
        expect(listed.events.map((e) => e.event_id).sort()).toEqual(["bt-good-1", "bt-good-2"])
        const range = yield* raw("GET", "/v1/events?from=0000-01-01T00:00:00Z")
        expect([range.status, range.error?.code]).toEqual([400, "invalid_parameter"])
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
          const answer = yield* raw("GET", path)
          expect([answer.status, answer.error?.code], path).toEqual([400, code])
        }
        const wrongType = yield* post("/v1/stripe/sync/manual", { window_start: 5, window_end: "2025-01-01T00:00:00Z" })
        expect([wrongType.status, wrongType.error?.code]).toEqual([400, "invalid_request"])
        const badStart = yield* post("/v1/stripe/sync/manual", { window_start: "soon", window_end: "2025-01-01T00:00:00Z" })
        expect([badStart.status, badStart.error?.code, badStart.error?.details]).toEqual([400, "invalid_parameter", { parameter: "window_start" }])
      })
    )

    it.effect("answers malformed JSON with malformed_json, an over-cap body with 413, 10,000-deep JSON with 400", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        for (const p of ["/v1/customers", "/v1/meters", "/v1/stripe/config/test"]) {
          const res = yield* raw("POST", p, { body: '{"external_id": "x",' })
          expect([res.status, res.error?.code], p).toEqual([400, "malformed_json"])
        }
        const big = yield* post("/v1/customers", { external_id: "big", name: "x".repeat(70_000) })
        expect([big.status, big.error?.code]).toEqual([413, "payload_too_large"])
        const deep = "[".repeat(10_000) + "]".repeat(10_000)
        for (const p of ["/v1/customers", "/v1/events", "/v1/events/bulk"]) {
          const res = yield* raw("POST", p, { body: `{"external_id":"deep","metadata":${deep}}`.replace("metadata", p.includes("events") ? "properties" : "metadata") })
          expect(res.status, p).toBe(400)
          expect(["nesting_too_deep", "malformed_json"]).toContain(res.error?.code)
        }
        const [, health] = yield* api.health.healthz({ withResponse: true })
        expect(health.status).toBe(200)
      })
    )

    it.effect("maps a database data error (SQLSTATE class 22) to 400 invalid_value, other failures stay 503", () =>
      Effect.gen(function* () {
        const outcome = (q: (sql: PgClient.PgClient) => Effect.Effect<unknown, SqlError>) => Effect.flip(orUnavailable(Effect.flatMap(PgClient.PgClient, q)))
        const data = yield* outcome((sql) => sql`SELECT '0000-01-01T00:00:00Z'::timestamptz AS t`)
        expect(data).toMatchObject({ _tag: "InvalidInput", code: "invalid_value", details: { sqlstate: expect.stringMatching(/^22/) } })
        const other = yield* outcome((sql) => sql`SELECT * FROM no_such_table`)
        expect([other._tag, other.code]).toEqual(["ServiceUnavailable", "database_unavailable"])
      })
    )
  })
})

/**
 * Issue #15 item 8, the smaller ones, at the HTTP level: a failed /readyz names the dependency
 * that failed; a 5xx is logged at ERROR with its code and message; query values never reach
 * logs or spans; GET /v1/events writes numbers exactly as they came in; the migrations cursor
 * of one tenant cannot position a page with another tenant's job; the customers and migrations
 * cursors are opaque: a forged or garbled one is a 400 `invalid_cursor`, the one handed out pages.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect, Layer, Redacted, Schema } from "effect"
import { expect } from "vitest"
import { EventList } from "../../src/domain/Models.js"
import { makeCapture } from "../../src/observability/Logging.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { forEachBackend, POSTGRES_URL_VAR } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, apiError, newTenant, raw, rows, TestTenant } from "../support/TestApp.js"

/** A cursor as the listings hand it out (src/http/Cursors.ts `rowId`): the row id, base64url. */
const cursorOf = (id: string) => Buffer.from(id, "utf8").toString("base64url")

const coded = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]

/*
 * Listing pages as they are on the wire, cursors undecoded: the typed client decodes `next_cursor`
 * back to the row id, and the cursor tests look at what a client is handed.
 */
const WireMigrations = Schema.Struct({ migrations: Schema.Array(Schema.Struct({ migration_id: Schema.String })), next_cursor: Schema.NullOr(Schema.String) })
const WireCustomers = Schema.Struct({ customers: Schema.Array(Schema.Struct({ id: Schema.String })), next_cursor: Schema.NullOr(Schema.String) })

const capture = makeCapture()
layer(TestApp.layer({ observe: Layer.merge(capture.layer, Telemetry.layerTest) }), { excludeTestServices: true })("failures are named, logged and scrubbed", (it) => {
  it.effect("logs a 5xx at ERROR with its code and message, and no query values in logs or spans", () =>
    Effect.gen(function* () {
      const api = yield* ApiClient
      // a well-formed cursor, so the request reaches the database (the client encodes the id)
      const id = "cust_qv7secretcursor9x"
      const secret = cursorOf(id)
      yield* rows("ALTER TABLE customers RENAME TO customers_away")
      const failed = yield* apiError(api.customers.list({ urlParams: { cursor: id, limit: 5 } })).pipe(
        Effect.ensuring(Effect.orDie(rows("ALTER TABLE customers_away RENAME TO customers")))
      )
      expect(coded(failed)).toEqual(["ServiceUnavailable", "database_unavailable"])
      const line = capture.records.find((r) => r["http.status"] === 503)
      expect(line, JSON.stringify(capture.records.slice(-5))).toBeDefined()
      expect(line?.["level"]).toBe("ERROR")
      expect(String(line?.["msg"])).toContain("database_unavailable")
      expect(String(line?.["msg"])).toContain("the database is not reachable")
      expect(JSON.stringify(capture.records)).not.toContain(secret)
      const spans = yield* Effect.flatMap(TelemetryTest, (t) => t.spans)
      const server = spans.filter((s) => String(s.attributes["url.path"] ?? "") === "/v1/customers")
      expect(server.length).toBeGreaterThan(0)
      expect(JSON.stringify(spans.map((s) => s.attributes))).not.toContain(secret)
      expect(String(server[0]?.attributes["url.full"])).toContain("cursor=")
    })
  )
})

/** One statement on the test PostgreSQL server as its superuser, outside the service. */
const admin = (statement: string) =>
  Effect.scoped(
    Effect.flatMap(
      Effect.flatMap(
        Effect.sync(() => process.env[POSTGRES_URL_VAR] ?? ""),
        (url) => Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
      ),
      (ctx) => Effect.provide(Effect.flatMap(PgClient.PgClient, (s) => s.unsafe(statement)), ctx)
    )
  )

forEachBackend(["postgres"], () => {
  layer(TestApp.layer({ backend: "postgres" }), { excludeTestServices: true })("a failed /readyz on postgres", (it) => {
    it.effect("says which dependency failed, in the error envelope, without connection details", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const [, ready] = yield* api.health.readyz({ withResponse: true })
        expect(ready.status).toBe(200)
        const db = String((yield* rows("SELECT current_database() AS db"))[0]?.["db"])
        // the database refuses every new connection and drops the service's open ones
        yield* admin(`ALTER DATABASE ${db} ALLOW_CONNECTIONS false`)
        const res = yield* Effect.gen(function* () {
          yield* admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}'`)
          // raw: the text itself is searched for what must not be in it
          return yield* raw("GET", "/readyz")
        }).pipe(Effect.ensuring(Effect.orDie(admin(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`))))
        expect(res.status).toBe(503)
        expect(res.text).not.toContain("[object Object]")
        expect(res.error?.code).toBe("not_ready")
        expect(res.error?.message).toMatch(/database (unreachable|timeout)/)
        expect(res.error?.details).toMatchObject({ checks: { database: expect.not.stringMatching(/^ok$/) } })
        expect(res.text).not.toMatch(/postgres:\/\/|127\.0\.0\.1|password/i)
      })
    )
  })
})

forEachBackend(["pglite", "postgres", "clickhouse"], (backend) => {
  layer(TestApp.layer({ backend }), { excludeTestServices: true })(`exact numbers out of GET /v1/events on ${backend}`, (it) => {
    it.effect("writes each property number as it came in", () =>
      Effect.gen(function* () {
        // raw both ways: numbers beyond a double's precision neither go in nor come out through JSON.parse
        const body = `{"event_id":"exact-1","event_name":"exact","external_customer_id":"exact-c","properties":{"big":99999999999999999999999.123456789,"small":0.1,"n":[12345678901234567890123,-0.000000000001]}}`
        const ingest = yield* raw("POST", "/v1/events", { body })
        expect(ingest.status).toBe(202)
        const listed = yield* raw("GET", "/v1/events?external_customer_id=exact-c")
        expect(listed.status).toBe(200)
        expect(listed.text).toContain('"big":99999999999999999999999.123456789')
        expect(listed.text).toContain('"small":0.1')
        expect(listed.text).toContain("12345678901234567890123")
        expect(listed.text).not.toContain("e+")
        expect(listed.as(EventList).events[0]?.event_id).toBe("exact-1")
      })
    )
  })
})

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(TestApp.layer({ backend }), { excludeTestServices: true })(`customers and migrations cursors on ${backend}`, (it) => {
    it.effect("tenant B's cursor cannot position B's page with tenant A's job", () =>
      Effect.gen(function* () {
        const a = (yield* TestTenant).scope
        const b = yield* newTenant("cursor-b")
        // B's job is older than A's: a cursor resolved without the tenant filter would list it
        yield* rows(
          `INSERT INTO migration_jobs (id, tenant_id, environment_id, kind, status, started_at)
           VALUES ('mig_b_older', '${b.scope.tenantId}', '${b.scope.environmentId}', 'csv', 'completed', now() - interval '1 hour'),
                  ('mig_a_newer', '${a.tenantId}', '${a.environmentId}', 'csv', 'completed', now())`
        )
        const own = yield* b.client.stripeMigration.list({ urlParams: {} })
        expect(own.migrations.map((m) => m.migration_id)).toEqual(["mig_b_older"])
        // the client sends the cursor as the listing hands it out: cursorOf(id)
        const [crossed, crossedResponse] = yield* b.client.stripeMigration.list({ urlParams: { cursor: "mig_a_newer" }, withResponse: true })
        expect(crossedResponse.status).toBe(200)
        expect(crossed.migrations).toEqual([])
        const unknown = yield* b.client.stripeMigration.list({ urlParams: { cursor: "mig_nonexistent" } })
        expect(unknown).toEqual(crossed)
      })
    )

    it.effect("a forged or garbled migrations cursor is 400 invalid_cursor; next_cursor pages", () =>
      Effect.gen(function* () {
        const c = yield* newTenant("cursor-c")
        yield* rows(
          `INSERT INTO migration_jobs (id, tenant_id, environment_id, kind, status, started_at)
           VALUES ('mig_c_2', '${c.scope.tenantId}', '${c.scope.environmentId}', 'csv', 'completed', now()),
                  ('mig_c_1', '${c.scope.tenantId}', '${c.scope.environmentId}', 'csv', 'completed', now() - interval '1 hour')`
        )
        const first = (yield* raw("GET", "/v1/stripe/migrate?limit=1", { apiKey: c.apiKey })).as(WireMigrations)
        expect(first.migrations.map((m) => m.migration_id)).toEqual(["mig_c_2"])
        expect(first.next_cursor).not.toBe("mig_c_2") // opaque, not the raw id
        const second = (yield* raw("GET", `/v1/stripe/migrate?limit=1&cursor=${first.next_cursor}`, { apiKey: c.apiKey })).as(WireMigrations)
        expect(second.migrations.map((m) => m.migration_id)).toEqual(["mig_c_1"])
        // a raw id, base64 of something that is no job id, garbage, a cursor of another listing
        for (const bad of ["mig_c_2", cursorOf("cust_c_2"), cursorOf("mig_c_2 OR 1=1"), "%25%25", "nonsense", `${cursorOf("mig_c_2")}=`]) {
          const res = yield* raw("GET", `/v1/stripe/migrate?cursor=${bad}`, { apiKey: c.apiKey })
          expect([res.status, res.error?.code], bad).toEqual([400, "invalid_cursor"])
        }
      })
    )

    it.effect("a forged or garbled customers cursor is 400 invalid_cursor; next_cursor pages", () =>
      Effect.gen(function* () {
        const d = yield* newTenant("cursor-d")
        for (const ext of ["cur-d-1", "cur-d-2"]) yield* d.client.customers.create({ payload: { external_id: ext } })
        const first = (yield* raw("GET", "/v1/customers?limit=1", { apiKey: d.apiKey })).as(WireCustomers)
        expect(first.customers).toHaveLength(1)
        const firstId = first.customers[0]?.id ?? ""
        expect(first.next_cursor).not.toBe(firstId) // opaque, not the raw id
        const second = (yield* raw("GET", `/v1/customers?limit=1&cursor=${first.next_cursor}`, { apiKey: d.apiKey })).as(WireCustomers)
        expect(second.customers).toHaveLength(1)
        expect(second.customers[0]?.id).not.toBe(firstId)
        for (const bad of [firstId, cursorOf("mig_x"), cursorOf("cust_x' --"), "%25%25", "nonsense", `${cursorOf("cust_x")}=`]) {
          const res = yield* raw("GET", `/v1/customers?cursor=${bad}`, { apiKey: d.apiKey })
          expect([res.status, res.error?.code], bad).toEqual([400, "invalid_cursor"])
        }
      })
    )
  })
})

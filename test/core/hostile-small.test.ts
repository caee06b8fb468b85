/**
 * Issue #15 item 8, the smaller ones, at the HTTP level: a failed /readyz names the dependency
 * that failed; a 5xx is logged at ERROR with its code and message; query values never reach
 * logs or spans; GET /v1/events writes numbers exactly as they came in; the migrations cursor
 * of one tenant cannot position a page with another tenant's job; the customers and migrations
 * cursors are opaque: a forged or garbled one is a 400 `invalid_cursor`, the one handed out pages.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeCapture } from "../../src/observability/Logging.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { forEachBackend, POSTGRES_URL_VAR, provided, startTestApp, type Backend, type TestApp } from "../support/app.js"

const sql = (app: TestApp, text: string) => app.run(Effect.flatMap(PgClient.PgClient, (s) => s.unsafe(text)))

/** A cursor as the listings hand it out (src/http/Cursors.ts `rowId`): the row id, base64url. */
const cursorOf = (id: string) => Buffer.from(id, "utf8").toString("base64url")

describe("failures are named, logged and scrubbed", () => {
  const capture = makeCapture()
  let app: TestApp
  beforeAll(async () => {
    app = await startTestApp({ observe: Layer.merge(capture.layer, Telemetry.layerTest) })
  })
  afterAll(() => app?.dispose())

  it("logs a 5xx at ERROR with its code and message, and no query values in logs or spans", async () => {
    // a well-formed cursor, so the request reaches the database
    const secret = cursorOf("cust_qv7secretcursor9x")
    await sql(app, "ALTER TABLE customers RENAME TO customers_away")
    let res
    try {
      res = await app.request("GET", `/v1/customers?cursor=${secret}&limit=5`)
    } finally {
      await sql(app, "ALTER TABLE customers_away RENAME TO customers")
    }
    expect([res.status, res.error.code]).toEqual([503, "database_unavailable"])
    const line = capture.records.find((r) => r["http.status"] === 503)
    expect(line, JSON.stringify(capture.records.slice(-5))).toBeDefined()
    expect(line!["level"]).toBe("ERROR")
    expect(String(line!["msg"])).toContain("database_unavailable")
    expect(String(line!["msg"])).toContain("the database is not reachable")
    expect(JSON.stringify(capture.records)).not.toContain(secret)
    const spans = await app.run(provided(Effect.flatMap(TelemetryTest, (t) => t.spans)))
    const server = spans.filter((s) => String(s.attributes["url.path"] ?? "") === "/v1/customers")
    expect(server.length).toBeGreaterThan(0)
    expect(JSON.stringify(spans.map((s) => s.attributes))).not.toContain(secret)
    expect(String(server[0].attributes["url.full"])).toContain("cursor=")
  })
})

forEachBackend(["postgres"], () => {
  describe("a failed /readyz on postgres", () => {
    let app: TestApp
    beforeAll(async () => {
      app = await startTestApp({ backend: "postgres" })
    })
    afterAll(() => app?.dispose())

    const admin = (statement: string) =>
      Effect.runPromise(
        Effect.scoped(
          Effect.flatMap(Layer.build(PgClient.layer({ url: Redacted.make(process.env[POSTGRES_URL_VAR]!), maxConnections: 1 })), (ctx) =>
            Effect.provide(Effect.flatMap(PgClient.PgClient, (s) => s.unsafe(statement)), ctx)
          )
        )
      )

    it("says which dependency failed, in the error envelope, without connection details", async () => {
      expect((await app.request("GET", "/readyz")).status).toBe(200)
      const [{ db }] = (await sql(app, "SELECT current_database() AS db")) as Array<{ db: string }>
      // the database refuses every new connection and drops the service's open ones
      await admin(`ALTER DATABASE ${db} ALLOW_CONNECTIONS false`)
      try {
        await admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}'`)
        const res = await app.request("GET", "/readyz")
        expect(res.status).toBe(503)
        expect(res.text).not.toContain("[object Object]")
        expect(res.error.code).toBe("not_ready")
        expect(res.error.message).toMatch(/database (unreachable|timeout)/)
        expect(res.error.details).toMatchObject({ checks: { database: expect.not.stringMatching(/^ok$/) } })
        expect(res.text).not.toMatch(/postgres:\/\/|127\.0\.0\.1|password/i)
      } finally {
        await admin(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`)
      }
    })
  })
})

forEachBackend(["pglite", "postgres", "clickhouse"], (backend: Backend) => {
  describe(`exact numbers out of GET /v1/events on ${backend}`, () => {
    let app: TestApp
    beforeAll(async () => {
      app = await startTestApp({ backend })
    })
    afterAll(() => app?.dispose())

    it("writes each property number as it came in", async () => {
      const raw = `{"event_id":"exact-1","event_name":"exact","external_customer_id":"exact-c","properties":{"big":99999999999999999999999.123456789,"small":0.1,"n":[12345678901234567890123,-0.000000000001]}}`
      const ingest = await app.request("POST", "/v1/events", undefined, { rawBody: raw })
      expect(ingest.status).toBe(202)
      const listed = await app.request("GET", "/v1/events?external_customer_id=exact-c")
      expect(listed.status).toBe(200)
      expect(listed.text).toContain('"big":99999999999999999999999.123456789')
      expect(listed.text).toContain('"small":0.1')
      expect(listed.text).toContain("12345678901234567890123")
      expect(listed.text).not.toContain("e+")
      expect(listed.data.events[0].event_id).toBe("exact-1")
    })
  })
})

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`customers and migrations cursors on ${backend}`, () => {
    let app: TestApp
    beforeAll(async () => {
      app = await startTestApp({ backend })
    })
    afterAll(() => app?.dispose())

    it("tenant B's cursor cannot position B's page with tenant A's job", async () => {
      const a = app.scope
      const b = await app.newTenant("cursor-b")
      // B's job is older than A's: a cursor resolved without the tenant filter would list it
      await sql(
        app,
        `INSERT INTO migration_jobs (id, tenant_id, environment_id, kind, status, started_at)
         VALUES ('mig_b_older', '${b.scope.tenantId}', '${b.scope.environmentId}', 'csv', 'completed', now() - interval '1 hour'),
                ('mig_a_newer', '${a.tenantId}', '${a.environmentId}', 'csv', 'completed', now())`
      )
      const own = await app.request("GET", "/v1/stripe/migrate", undefined, { apiKey: b.apiKey })
      expect(own.data.migrations.map((m) => m.migration_id)).toEqual(["mig_b_older"])
      const crossed = await app.request("GET", `/v1/stripe/migrate?cursor=${cursorOf("mig_a_newer")}`, undefined, { apiKey: b.apiKey })
      expect(crossed.status).toBe(200)
      expect(crossed.data.migrations).toEqual([])
      const unknown = await app.request("GET", `/v1/stripe/migrate?cursor=${cursorOf("mig_nonexistent")}`, undefined, { apiKey: b.apiKey })
      expect(unknown.body).toEqual(crossed.body)
    })

    it("a forged or garbled migrations cursor is 400 invalid_cursor; next_cursor pages", async () => {
      const c = await app.newTenant("cursor-c")
      await sql(
        app,
        `INSERT INTO migration_jobs (id, tenant_id, environment_id, kind, status, started_at)
         VALUES ('mig_c_2', '${c.scope.tenantId}', '${c.scope.environmentId}', 'csv', 'completed', now()),
                ('mig_c_1', '${c.scope.tenantId}', '${c.scope.environmentId}', 'csv', 'completed', now() - interval '1 hour')`
      )
      const first = await app.request("GET", "/v1/stripe/migrate?limit=1", undefined, { apiKey: c.apiKey })
      expect(first.data.migrations.map((m) => m.migration_id)).toEqual(["mig_c_2"])
      expect(first.data.next_cursor).not.toBe("mig_c_2") // opaque, not the raw id
      const second = await app.request("GET", `/v1/stripe/migrate?limit=1&cursor=${first.data.next_cursor}`, undefined, { apiKey: c.apiKey })
      expect(second.data.migrations.map((m) => m.migration_id)).toEqual(["mig_c_1"])
      // a raw id, base64 of something that is no job id, garbage, a cursor of another listing
      for (const bad of ["mig_c_2", cursorOf("cust_c_2"), cursorOf("mig_c_2 OR 1=1"), "%25%25", "nonsense", `${cursorOf("mig_c_2")}=`]) {
        const res = await app.request("GET", `/v1/stripe/migrate?cursor=${bad}`, undefined, { apiKey: c.apiKey })
        expect([res.status, res.error?.code], bad).toEqual([400, "invalid_cursor"])
      }
    })

    it("a forged or garbled customers cursor is 400 invalid_cursor; next_cursor pages", async () => {
      const d = await app.newTenant("cursor-d")
      for (const ext of ["cur-d-1", "cur-d-2"]) await app.request("POST", "/v1/customers", { external_id: ext }, { apiKey: d.apiKey })
      const first = await app.request("GET", "/v1/customers?limit=1", undefined, { apiKey: d.apiKey })
      expect(first.data.customers).toHaveLength(1)
      expect(first.data.next_cursor).not.toBe(first.data.customers[0].id) // opaque, not the raw id
      const second = await app.request("GET", `/v1/customers?limit=1&cursor=${first.data.next_cursor}`, undefined, { apiKey: d.apiKey })
      expect(second.data.customers).toHaveLength(1)
      expect(second.data.customers[0].id).not.toBe(first.data.customers[0].id)
      for (const bad of [first.data.customers[0].id, cursorOf("mig_x"), cursorOf("cust_x' --"), "%25%25", "nonsense", `${cursorOf("cust_x")}=`]) {
        const res = await app.request("GET", `/v1/customers?cursor=${bad}`, undefined, { apiKey: d.apiKey })
        expect([res.status, res.error?.code], bad).toEqual([400, "invalid_cursor"])
      }
    })
  })
})

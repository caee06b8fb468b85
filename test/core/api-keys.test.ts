/**
 * Tenant API keys can be created and revoked (issue #15 item 8): over HTTP
 * (`POST/GET /v1/tenant/keys`, `DELETE /v1/tenant/keys/:id`, audited) and with the CLI
 * (`tenant keys create|revoke`). A revoked key answers 401 on its next request, on every replica;
 * keys are stored as SHA-256 hashes and shown once.
 */
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Cause, ConfigProvider, Effect, Exit, Layer, Logger, LogLevel } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { AppLive } from "../../src/App.js"
import { tenant } from "../../src/bin/TenantCli.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR, startTestApp, type Backend, type TestApp } from "../support/app.js"

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex")
const sql = (app: TestApp, text: string) => app.run(Effect.flatMap(PgClient.PgClient, (s) => s.unsafe<Record<string, unknown>>(text)))

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`tenant API keys over HTTP on ${backend}`, () => {
    let app: TestApp
    beforeAll(async () => {
      app = await startTestApp({ backend })
    })
    afterAll(() => app?.dispose())

    it("creates a key shown once and stored hashed, rotates, and the revoked key is refused at once", async () => {
      const first = (await app.request("GET", "/v1/tenant/keys")).data.keys
      expect(first).toHaveLength(1)
      const oldId = first[0].id as string
      expect(JSON.stringify(first)).not.toContain(app.apiKey)

      const created = await app.request("POST", "/v1/tenant/keys")
      expect(created.status).toBe(201)
      const newKey = created.data.api_key as string
      expect(newKey).toMatch(/^fp_[A-Za-z0-9_-]{32}$/)
      expect(created.data.key_prefix).toBe(newKey.slice(0, 7))
      const rows = await sql(app, `SELECT * FROM api_keys WHERE id = '${created.data.id}'`)
      expect(rows).toHaveLength(1)
      expect(JSON.stringify(rows)).not.toContain(newKey)
      // the test client maps columns to camelCase
      expect(rows[0].keyHash).toBe(sha256(newKey))
      const listed = (await app.request("GET", "/v1/tenant/keys", undefined, { apiKey: newKey })).data.keys
      expect(listed.map((k) => k.id).sort()).toEqual([oldId, created.data.id].sort())
      expect(JSON.stringify(listed)).not.toContain(newKey)

      const revoked = await app.request("DELETE", `/v1/tenant/keys/${oldId}`, undefined, { apiKey: newKey })
      expect([revoked.status, revoked.body]).toEqual([200, { id: oldId, revoked: true }])
      const refused = await app.request("GET", "/v1/customers", undefined, { apiKey: app.apiKey })
      expect([refused.status, refused.error.code]).toEqual([401, "invalid_api_key"])
      expect((await app.request("GET", "/v1/customers", undefined, { apiKey: newKey })).status).toBe(200)
      const after = (await app.request("GET", "/v1/tenant/keys", undefined, { apiKey: newKey })).data.keys
      expect(after.find((k) => k.id === oldId)!.revoked_at).not.toBeNull()

      const audit = await sql(app, `SELECT action, target, actor FROM audit_log WHERE target LIKE 'api_key:%' ORDER BY created_at`)
      expect(audit).toEqual([
        { action: "api_key.create", target: `api_key:${created.data.id}`, actor: "api" },
        { action: "api_key.revoke", target: `api_key:${oldId}`, actor: "api" }
      ])
      expect(JSON.stringify(await sql(app, "SELECT * FROM audit_log"))).not.toContain(newKey)
    })

    it("revoking an already revoked key is idempotent: the same 200 answer, one audit row", async () => {
      const t = await app.newTenant("keys-twice")
      const keys = (await app.request("GET", "/v1/tenant/keys", undefined, { apiKey: t.apiKey })).data.keys
      const second = await app.request("POST", "/v1/tenant/keys", undefined, { apiKey: t.apiKey })
      const id = keys[0].id as string
      const first = await app.request("DELETE", `/v1/tenant/keys/${id}`, undefined, { apiKey: second.data.api_key })
      const again = await app.request("DELETE", `/v1/tenant/keys/${id}`, undefined, { apiKey: second.data.api_key })
      expect([first.status, first.body]).toEqual([200, { id, revoked: true }])
      expect([again.status, again.body]).toEqual([200, { id, revoked: true }])
      const audit = await sql(app, `SELECT action FROM audit_log WHERE target = 'api_key:${id}'`)
      expect(audit).toEqual([{ action: "api_key.revoke" }])
    })

    it("a key revoked behind this process's back (another replica, an operator's SQL) is refused on its next request", async () => {
      const t = await app.newTenant("keys-behind")
      // used twice, so this process has seen (and remembered) the key valid
      expect((await app.request("GET", "/v1/customers", undefined, { apiKey: t.apiKey })).status).toBe(200)
      expect((await app.request("GET", "/v1/customers", undefined, { apiKey: t.apiKey })).status).toBe(200)
      await sql(app, `UPDATE api_keys SET revoked_at = now() WHERE key_hash = '${sha256(t.apiKey)}'`)
      const refused = await app.request("GET", "/v1/customers", undefined, { apiKey: t.apiKey })
      expect([refused.status, refused.error.code]).toEqual([401, "invalid_api_key"])
      // and stays refused (a revoked key is not remembered as valid again)
      expect((await app.request("POST", "/v1/events/bulk", { events: [] }, { apiKey: t.apiKey })).status).toBe(401)
    })

    it("refuses to revoke the environment's last key or another tenant's key", async () => {
      const mine = await app.newTenant("keys-mine")
      const other = await app.newTenant("keys-other")
      const otherKeys = (await app.request("GET", "/v1/tenant/keys", undefined, { apiKey: other.apiKey })).data.keys
      await app.request("POST", "/v1/tenant/keys", undefined, { apiKey: mine.apiKey })
      const crossed = await app.request("DELETE", `/v1/tenant/keys/${otherKeys[0].id}`, undefined, { apiKey: mine.apiKey })
      expect([crossed.status, crossed.error.code]).toEqual([404, "api_key_not_found"])
      expect((await app.request("GET", "/v1/customers", undefined, { apiKey: other.apiKey })).status).toBe(200)
      const last = await app.request("DELETE", `/v1/tenant/keys/${otherKeys[0].id}`, undefined, { apiKey: other.apiKey })
      expect([last.status, last.error.code]).toEqual([409, "last_api_key"])
      expect((await app.request("GET", "/v1/customers", undefined, { apiKey: other.apiKey })).status).toBe(200)
    })
  })
})

forEachBackend(["postgres"], () => {
  describe("a revoked key on another replica (PostgreSQL)", () => {
    let a: TestApp
    let b: TestApp
    let drop: () => Promise<void>
    beforeAll(async () => {
      const db = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
      drop = db.drop
      a = await startTestApp({ backend: "postgres", databaseUrl: db.url })
      b = await startTestApp({ backend: "postgres", databaseUrl: db.url })
    }, 60_000)
    afterAll(async () => {
      await b?.dispose()
      await a?.dispose()
      await drop?.()
    })

    it("answers 401 on replica B for a key revoked through replica A, on B's next request", async () => {
      const t = await a.newTenant("replicas")
      expect((await b.request("GET", "/v1/customers", undefined, { apiKey: t.apiKey })).status).toBe(200)
      const second = await a.request("POST", "/v1/tenant/keys", undefined, { apiKey: t.apiKey })
      const keys = (await a.request("GET", "/v1/tenant/keys", undefined, { apiKey: t.apiKey })).data.keys
      const oldId = keys.find((k) => k.id !== second.data.id)!.id
      expect((await a.request("DELETE", `/v1/tenant/keys/${oldId}`, undefined, { apiKey: second.data.api_key })).status).toBe(200)
      const res = await b.request("GET", "/v1/customers", undefined, { apiKey: t.apiKey })
      expect([res.status, res.error.code]).toEqual([401, "invalid_api_key"])
    })
  })
})

describe("tenant keys CLI", () => {
  const dir = freshDataDir()
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
  const provider = ConfigProvider.fromMap(new Map([["FLEXPRICE_DATA_DIR", dir]])).pipe(ConfigProvider.orElse(() => ConfigProvider.fromEnv()))
  const cli = Command.run(Command.make("flexprice").pipe(Command.withSubcommands([tenant])), { name: "flexprice", version: "test" })
  /** The command in-process (a spawned CLI compiles and starts for a minute under load); stdout captured. */
  const run = async (...args: Array<string>) => {
    const out: Array<string> = []
    const spy = vi.spyOn(console, "log").mockImplementation((...parts: Array<unknown>) => void out.push(parts.join(" ")))
    try {
      const exit = await Effect.runPromiseExit(
        cli(["node", "flexprice", ...args]).pipe(Effect.provide(NodeContext.layer), Effect.withConfigProvider(provider), Logger.withMinimumLogLevel(LogLevel.None))
      )
      return { ok: Exit.isSuccess(exit), out: out.join("\n"), error: Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "" }
    } finally {
      spy.mockRestore()
    }
  }
  const authenticate = (key: string) =>
    Effect.runPromise(
      Effect.scoped(Effect.flatMap(Layer.build(AppLive), (ctx) => Effect.provide(Effect.flatMap(TenantRepo, (r) => r.authenticate(key)), ctx))).pipe(
        Effect.withConfigProvider(provider)
      )
    )

  it("creates a second key for a tenant environment, lists keys without them, revokes the first", async () => {
    const tenantOut = await run("tenant", "create", "--name", "cli-keys")
    expect(tenantOut.ok, tenantOut.error).toBe(true)
    const t = JSON.parse(tenantOut.out) as { tenant_id: string; environment_id: string; api_key: string }
    const created = await run("tenant", "keys", "create", "--tenant-id", t.tenant_id, "--environment-id", t.environment_id)
    expect(created.ok, created.error).toBe(true)
    const k = JSON.parse(created.out) as { id: string; api_key: string; tenant_id: string }
    expect(k.tenant_id).toBe(t.tenant_id)
    expect(k.api_key).not.toBe(t.api_key)
    const unknown = await run("tenant", "keys", "create", "--tenant-id", "tnt_doesnotexist", "--environment-id", t.environment_id)
    expect(unknown.ok).toBe(false)
    expect(unknown.error).toContain("no tenant environment")
    const listed = await run("tenant", "keys", "list", "--tenant-id", t.tenant_id, "--environment-id", t.environment_id)
    expect(listed.ok, listed.error).toBe(true)
    const keys = JSON.parse(listed.out).keys as Array<{ id: string; key_prefix: string; revoked_at: string | null }>
    expect(keys).toHaveLength(2)
    expect(listed.out).not.toContain(k.api_key)
    expect(listed.out).not.toContain(t.api_key)
    const firstId = keys.find((x) => x.id !== k.id)!.id
    const revokeFirst = await run("tenant", "keys", "revoke", "--id", firstId)
    expect(revokeFirst.ok, revokeFirst.error).toBe(true)
    expect(JSON.parse(revokeFirst.out)).toEqual({ id: firstId, revoked: true })
    const revokeUnknown = await run("tenant", "keys", "revoke", "--id", "key_doesnotexist")
    expect(revokeUnknown.ok).toBe(false)
    expect(revokeUnknown.error).toContain("key_doesnotexist")
    expect((await authenticate(t.api_key))._tag).toBe("None")
    expect((await authenticate(k.api_key))._tag).toBe("Some")
  }, 300_000)
})

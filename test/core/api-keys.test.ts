/**
 * Tenant API keys can be created and revoked (issue #15 item 8): over HTTP
 * (`POST/GET /v1/tenant/keys`, `DELETE /v1/tenant/keys/:id`, audited) and with the CLI
 * (`tenant keys create|revoke`). A revoked key answers 401 on its next request, on every replica;
 * keys are stored as SHA-256 hashes and shown once.
 */
import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { layer } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Layer, Logger, LogLevel } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { afterAll, describe, expect, it, vi } from "vitest"
import { AppLive } from "../../src/App.js"
import { tenant } from "../../src/bin/TenantCli.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { forEachBackend, freshDataDir } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, apiError, newTenant, Replica, rows, TestTenant } from "../support/TestApp.js"

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex")
const coded = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]
/** The typed client as `apiKey`. */
const as = (apiKey: string) => TestApp.makeClient(apiKey)

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(TestApp.layer({ backend }), { excludeTestServices: true })(`tenant API keys over HTTP on ${backend}`, (it) => {
    it.effect("creates a key shown once and stored hashed, rotates, and the revoked key is refused at once", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const { apiKey } = yield* TestTenant
        const first = (yield* api.tenantKeys.list()).keys
        expect(first).toHaveLength(1)
        const oldId = first[0]!.id
        expect(JSON.stringify(first)).not.toContain(apiKey)

        const [created, response] = yield* api.tenantKeys.create({ withResponse: true })
        expect(response.status).toBe(201)
        const newKey = created.api_key
        expect(newKey).toMatch(/^fp_[A-Za-z0-9_-]{32}$/)
        expect(created.key_prefix).toBe(newKey.slice(0, 7))
        const stored = yield* rows(`SELECT * FROM api_keys WHERE id = '${created.id}'`)
        expect(stored).toHaveLength(1)
        expect(JSON.stringify(stored)).not.toContain(newKey)
        // the test client maps columns to camelCase
        expect(stored[0]!["keyHash"]).toBe(sha256(newKey))
        const rotated = yield* as(newKey)
        const listed = (yield* rotated.tenantKeys.list()).keys
        expect(listed.map((k) => k.id).sort()).toEqual([oldId, created.id].sort())
        expect(JSON.stringify(listed)).not.toContain(newKey)

        const [revoked, revokedResponse] = yield* rotated.tenantKeys.revoke({ path: { id: oldId }, withResponse: true })
        expect([revokedResponse.status, revoked]).toEqual([200, { id: oldId, revoked: true }])
        expect(coded(yield* apiError(api.customers.list({ urlParams: {} })))).toEqual(["Unauthorized", "invalid_api_key"])
        const [, ok] = yield* rotated.customers.list({ urlParams: {}, withResponse: true })
        expect(ok.status).toBe(200)
        const after = (yield* rotated.tenantKeys.list()).keys
        expect(after.find((k) => k.id === oldId)?.revoked_at).toEqual(expect.any(String))

        const audit = yield* rows(`SELECT action, target, actor FROM audit_log WHERE target LIKE 'api_key:%' ORDER BY created_at`)
        expect(audit).toEqual([
          { action: "api_key.create", target: `api_key:${created.id}`, actor: "api" },
          { action: "api_key.revoke", target: `api_key:${oldId}`, actor: "api" }
        ])
        expect(JSON.stringify(yield* rows("SELECT * FROM audit_log"))).not.toContain(newKey)
      })
    )

    it.effect("revoking an already revoked key is idempotent: the same 200 answer, one audit row", () =>
      Effect.gen(function* () {
        const t = yield* newTenant("keys-twice")
        const keys = (yield* t.client.tenantKeys.list()).keys
        const second = yield* as((yield* t.client.tenantKeys.create()).api_key)
        const id = keys[0]!.id
        const [first, firstResponse] = yield* second.tenantKeys.revoke({ path: { id }, withResponse: true })
        const [again, againResponse] = yield* second.tenantKeys.revoke({ path: { id }, withResponse: true })
        expect([firstResponse.status, first]).toEqual([200, { id, revoked: true }])
        expect([againResponse.status, again]).toEqual([200, { id, revoked: true }])
        expect(yield* rows(`SELECT action FROM audit_log WHERE target = 'api_key:${id}'`)).toEqual([{ action: "api_key.revoke" }])
      })
    )

    it.effect("a key revoked behind this process's back (another replica, an operator's SQL) is refused on its next request", () =>
      Effect.gen(function* () {
        const t = yield* newTenant("keys-behind")
        // used twice, so this process has seen (and remembered) the key valid
        for (let i = 0; i < 2; i++) {
          const [, response] = yield* t.client.customers.list({ urlParams: {}, withResponse: true })
          expect(response.status).toBe(200)
        }
        yield* rows(`UPDATE api_keys SET revoked_at = now() WHERE key_hash = '${sha256(t.apiKey)}'`)
        expect(coded(yield* apiError(t.client.customers.list({ urlParams: {} })))).toEqual(["Unauthorized", "invalid_api_key"])
        // and stays refused (a revoked key is not remembered as valid again)
        expect(coded(yield* apiError(t.client.events.bulk({ payload: { events: [] } })))).toEqual(["Unauthorized", "invalid_api_key"])
      })
    )

    it.effect("refuses to revoke the environment's last key or another tenant's key", () =>
      Effect.gen(function* () {
        const mine = yield* newTenant("keys-mine")
        const other = yield* newTenant("keys-other")
        const otherKeys = (yield* other.client.tenantKeys.list()).keys
        yield* mine.client.tenantKeys.create()
        const crossed = yield* apiError(mine.client.tenantKeys.revoke({ path: { id: otherKeys[0]!.id } }))
        expect(coded(crossed)).toEqual(["NotFound", "api_key_not_found"])
        const [, still] = yield* other.client.customers.list({ urlParams: {}, withResponse: true })
        expect(still.status).toBe(200)
        const last = yield* apiError(other.client.tenantKeys.revoke({ path: { id: otherKeys[0]!.id } }))
        expect(coded(last)).toEqual(["Conflict", "last_api_key"])
        const [, stillAfter] = yield* other.client.customers.list({ urlParams: {}, withResponse: true })
        expect(stillAfter.status).toBe(200)
      })
    )
  })
})

forEachBackend(["postgres"], () => {
  // replica B serves the same database as the layer's service (A)
  layer(TestApp.replica.pipe(Layer.provideMerge(TestApp.layer({ backend: "postgres" }))), { excludeTestServices: true })(
    "a revoked key on another replica (PostgreSQL)",
    (it) => {
      it.effect("answers 401 on replica B for a key revoked through replica A, on B's next request", () =>
        Effect.gen(function* () {
          const t = yield* newTenant("replicas")
          const b = yield* (yield* Replica).client(t.apiKey)
          const [, seen] = yield* b.customers.list({ urlParams: {}, withResponse: true })
          expect(seen.status).toBe(200)
          const second = yield* t.client.tenantKeys.create()
          const keys = (yield* t.client.tenantKeys.list()).keys
          const oldId = keys.find((k) => k.id !== second.id)?.id ?? "none"
          const [, revoked] = yield* (yield* as(second.api_key)).tenantKeys.revoke({ path: { id: oldId }, withResponse: true })
          expect(revoked.status).toBe(200)
          expect(coded(yield* apiError(b.customers.list({ urlParams: {} })))).toEqual(["Unauthorized", "invalid_api_key"])
        })
      )
    }
  )
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

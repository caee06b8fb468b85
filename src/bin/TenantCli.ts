/**
 * `flexprice tenant …`: create a tenant environment with its first API key, and manage further
 * keys (create, list, revoke). Output is one JSON object on stdout; keys appear only in the
 * output of the command that created them.
 */
import { Command, Options } from "@effect/cli"
import { Console, Effect, Option } from "effect"
import { AppLive } from "../App.js"
import { EnvironmentId, TenantId, TenantScope } from "../domain/Ids.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { AuditLog } from "../security/AuditLog.js"

const tenantCreate = Command.make(
  "create",
  {
    name: Options.text("name").pipe(Options.withDescription("tenant name")),
    environment: Options.text("environment").pipe(Options.withDefault("production"), Options.withDescription("environment name"))
  },
  ({ name, environment }) =>
    Effect.gen(function* () {
      const repo = yield* TenantRepo
      const created = yield* repo.create(name, environment)
      yield* Console.log(
        JSON.stringify({ tenant_id: created.tenantId, environment_id: created.environmentId, api_key: created.apiKey })
      )
    }).pipe(Effect.provide(AppLive))
).pipe(Command.withDescription("Create a tenant environment and an API key; prints {tenant_id, environment_id, api_key}"))

const scopeOptions = {
  tenantId: Options.text("tenant-id").pipe(Options.withDescription("tenant id (as printed by tenant create)")),
  environmentId: Options.text("environment-id").pipe(Options.withDescription("environment id (as printed by tenant create)"))
}
const scopeOf = (o: { tenantId: string; environmentId: string }) =>
  TenantScope.make({ tenantId: TenantId.make(o.tenantId), environmentId: EnvironmentId.make(o.environmentId) })

const tenantKeysCreate = Command.make("create", scopeOptions, (o) =>
  Effect.gen(function* () {
    const repo = yield* TenantRepo
    const audit = yield* AuditLog
    const created = yield* repo.createKey(scopeOf(o))
    if (Option.isNone(created)) return yield* Effect.fail(new Error(`no tenant environment ${o.tenantId}/${o.environmentId}`))
    const k = created.value
    yield* audit.record({ action: "api_key.create", actor: "cli", target: `api_key:${k.id}`, scope: scopeOf(o), details: { key_prefix: k.keyPrefix } })
    yield* Console.log(
      JSON.stringify({ id: k.id, api_key: k.apiKey, key_prefix: k.keyPrefix, tenant_id: o.tenantId, environment_id: o.environmentId })
    )
  }).pipe(Effect.provide(AppLive))
).pipe(Command.withDescription("Create another API key for a tenant environment; prints {id, api_key, ...} (the key is shown only here)"))

const tenantKeysList = Command.make("list", scopeOptions, (o) =>
  Effect.gen(function* () {
    const keys = yield* Effect.flatMap(TenantRepo, (r) => r.listKeys(scopeOf(o)))
    yield* Console.log(
      JSON.stringify({
        keys: keys.map((k) => ({ id: k.id, key_prefix: k.keyPrefix, created_at: k.createdAt.toISOString(), revoked_at: k.revokedAt?.toISOString() ?? null }))
      })
    )
  }).pipe(Effect.provide(AppLive))
).pipe(Command.withDescription("List a tenant environment's API keys (ids and prefixes, never the keys)"))

const tenantKeysRevoke = Command.make(
  "revoke",
  { id: Options.text("id").pipe(Options.withDescription("the key's id (key_…), from tenant keys list")) },
  ({ id }) =>
    Effect.gen(function* () {
      const repo = yield* TenantRepo
      const audit = yield* AuditLog
      // the operator may revoke an environment's last key (a leaked key must stop working now)
      const outcome = yield* repo.revokeKey({ id, keepOne: false })
      if (outcome._tag === "NotFound" || outcome._tag === "LastKey") return yield* Effect.fail(new Error(`no API key ${id}`))
      if (outcome._tag === "Revoked") yield* audit.record({ action: "api_key.revoke", actor: "cli", target: `api_key:${id}`, scope: outcome.scope })
      yield* Console.log(JSON.stringify({ id, revoked: true }))
    }).pipe(Effect.provide(AppLive))
).pipe(Command.withDescription("Revoke an API key: it answers 401 from the next request on, on every replica (embedded mode: stop serve first, or use DELETE /v1/tenant/keys/:id)"))

const tenantKeys = Command.make("keys").pipe(Command.withSubcommands([tenantKeysCreate, tenantKeysList, tenantKeysRevoke]))

export const tenant = Command.make("tenant").pipe(Command.withSubcommands([tenantCreate, tenantKeys]))

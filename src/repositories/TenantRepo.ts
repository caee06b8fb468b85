/**
 * Tenants, environments and API keys. Keys are random 24-byte tokens shown once; only their
 * SHA-256 hash is stored. A key belongs to exactly one (tenant, environment). Every request
 * re-reads its key row, so a revocation holds on every replica from the next request.
 *
 * What is cached, and why revocation still holds at once: a key's row never changes tenant, so
 * the process remembers hash → (tenant, environment) for keys it has seen valid. A request whose
 * hash is remembered still reads the key's row (`revoked_at IS NULL`) — but as that tenant,
 * under its row-level security, instead of as `flexprice_system`. The read is the same indexed
 * lookup; what it saves is the connection's switch to the system role and back (two statements
 * per request, RowSecurity.ts). A revoked (or deleted) key reads no row: 401, and the entry is
 * dropped. No time bound, no staleness: the database answers every request.
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Option, Schema } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import { asSystem, inTenant } from "../db/RowSecurity.js"
import { EnvironmentId, newId, TenantId, TenantScope } from "../domain/Ids.js"

export const hashApiKey = (key: string): string => createHash("sha256").update(key).digest("hex")

const newApiKey = () => {
  const apiKey = `fp_${randomBytes(24).toString("base64url")}`
  return { apiKey, keyHash: hashApiKey(apiKey), keyPrefix: apiKey.slice(0, 7) }
}

export interface ApiKeyRow {
  readonly id: string
  readonly keyPrefix: string
  readonly createdAt: Date
  readonly revokedAt: Date | null
}

export type RevokeOutcome =
  | { readonly _tag: "Revoked"; readonly scope: TenantScope }
  /** revoked before this call: nothing changed (a retried revocation) */
  | { readonly _tag: "AlreadyRevoked"; readonly scope: TenantScope }
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "LastKey" }

/** A key as listed: never its hash (not even selected). */
const ApiKeyRowSchema = Schema.Struct({ id: Schema.String, keyPrefix: Schema.String, createdAt: DbDate, revokedAt: Schema.NullOr(DbDate) })
const decodeCreated = Schema.decodeUnknown(Schema.Array(Schema.Struct({ createdAt: DbDate })))
const ScopeRequest = Schema.Struct({ tenantId: Schema.String, environmentId: Schema.String })

/** Keys remembered as hash → scope (see the module comment); the oldest is dropped beyond this. */
export const MAX_CACHED_KEYS = 10_000

export class TenantRepo extends Effect.Service<TenantRepo>()("flexprice/TenantRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const scopeOfHash = new Map<string, TenantScope>()

    const tenantByName = SqlSchema.findOne({
      Request: Schema.String,
      Result: Schema.Struct({ id: TenantId }),
      execute: (name) => sql`SELECT id FROM tenants WHERE name = ${name} ORDER BY created_at LIMIT 1`
    })
    const environmentByName = SqlSchema.findOne({
      Request: Schema.Struct({ tenantId: Schema.String, name: Schema.String }),
      Result: Schema.Struct({ id: EnvironmentId }),
      execute: ({ tenantId, name }) => sql`SELECT id FROM environments WHERE tenant_id = ${tenantId} AND name = ${name}`
    })

    /** Creates a tenant (or reuses one by name) with an environment and a fresh API key. */
    const create = Effect.fn("TenantRepo.create")(function* (name: string, environment: string) {
      const { apiKey, keyHash, keyPrefix } = newApiKey()
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const existing = yield* orDieOnRow(tenantByName(name))
          const tenantId = Option.isSome(existing) ? existing.value.id : newId.tenant()
          if (Option.isNone(existing)) yield* sql`INSERT INTO tenants ${sql.insert({ id: tenantId, name })}`
          const env = yield* orDieOnRow(environmentByName({ tenantId, name: environment }))
          const environmentId = Option.isSome(env) ? env.value.id : newId.environment()
          if (Option.isNone(env)) yield* sql`INSERT INTO environments ${sql.insert({ id: environmentId, tenantId, name: environment })}`
          yield* sql`INSERT INTO api_keys ${sql.insert({
            id: newId.apiKeyId(),
            tenantId,
            environmentId,
            keyHash,
            keyPrefix
          })}`
          return { tenantId, environmentId, apiKey }
        })
      ).pipe(asSystem("creating a tenant (or reusing one by name)"))
    })

    const scopeOfKey = SqlSchema.findOne({
      Request: Schema.String,
      Result: TenantScope,
      execute: (keyHash) => sql`SELECT tenant_id, environment_id FROM api_keys WHERE key_hash = ${keyHash} AND revoked_at IS NULL`
    })
    /** The key's tenant environment, found across tenants (no tenant is known yet). */
    const lookUp = (keyHash: string): Effect.Effect<Option.Option<TenantScope>, SqlError> =>
      orDieOnRow(scopeOfKey(keyHash)).pipe(asSystem("an API key names its tenant"))

    /** Whether the key is still active, read as its own tenant (row-level security applies). */
    const stillActive = (keyHash: string, scope: TenantScope) =>
      sql`SELECT 1 FROM api_keys WHERE key_hash = ${keyHash} AND revoked_at IS NULL
        AND tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`.pipe(
        inTenant(scope),
        Effect.map((rows) => rows.length > 0)
      )

    const authenticate = Effect.fn("TenantRepo.authenticate")(function* (apiKey: string) {
      const keyHash = hashApiKey(apiKey)
      const known = scopeOfHash.get(keyHash)
      if (known !== undefined) {
        if (yield* stillActive(keyHash, known)) return Option.some(known)
        scopeOfHash.delete(keyHash)
        return Option.none()
      }
      const found = yield* lookUp(keyHash)
      if (Option.isSome(found)) {
        if (scopeOfHash.size >= MAX_CACHED_KEYS) scopeOfHash.delete(scopeOfHash.keys().next().value!)
        scopeOfHash.set(keyHash, found.value)
      }
      return found
    })

    const environmentExists = (scope: TenantScope) =>
      Effect.map(
        sql`SELECT 1 FROM environments WHERE id = ${scope.environmentId} AND tenant_id = ${scope.tenantId}`.pipe(inTenant(scope)),
        (rows) => rows.length > 0
      )

    const environmentRows = SqlSchema.findAll({
      Request: Schema.Void,
      Result: TenantScope,
      execute: () => sql`SELECT tenant_id, id AS environment_id FROM environments ORDER BY tenant_id, id`
    })
    /** Every tenant environment (the scheduler walks these). */
    const listEnvironments: Effect.Effect<ReadonlyArray<TenantScope>, SqlError> = orDieOnRow(environmentRows(undefined)).pipe(
      asSystem("enumerating tenant environments")
    )

    /** A further key for an existing environment (rotation: create, switch clients, revoke the old). */
    const createKey = Effect.fn("TenantRepo.createKey")(function* (scope: TenantScope) {
      const { apiKey, keyHash, keyPrefix } = newApiKey()
      const id = newId.apiKeyId()
      const rows = yield* sql`
        INSERT INTO api_keys (id, tenant_id, environment_id, key_hash, key_prefix)
        SELECT ${id}, tenant_id, id, ${keyHash}, ${keyPrefix} FROM environments
          WHERE id = ${scope.environmentId} AND tenant_id = ${scope.tenantId}
        RETURNING created_at`.pipe(inTenant(scope))
      const created = yield* Effect.orDie(decodeCreated(rows))
      return Option.map(Option.fromNullable(created[0]), (r) => ({ id, apiKey, keyPrefix, createdAt: r.createdAt }))
    })

    const keyRows = SqlSchema.findAll({
      Request: ScopeRequest,
      Result: ApiKeyRowSchema,
      execute: (scope) =>
        sql`SELECT id, key_prefix, created_at, revoked_at FROM api_keys
          WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} ORDER BY created_at, id`
    })
    const listKeys = (scope: TenantScope): Effect.Effect<ReadonlyArray<ApiKeyRow>, SqlError> =>
      orDieOnRow(keyRows({ tenantId: scope.tenantId, environmentId: scope.environmentId })).pipe(inTenant(scope))

    const keyToRevoke = SqlSchema.findOne({
      Request: Schema.Struct({ id: Schema.String, scope: Schema.optional(ScopeRequest) }),
      Result: Schema.Struct({ tenantId: TenantId, environmentId: EnvironmentId, revoked: Schema.Boolean }),
      execute: ({ id, scope }) =>
        sql`SELECT tenant_id, environment_id, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE id = ${id}
          ${scope ? sql`AND tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}` : sql``}`
    })

    /**
     * Revokes a key: in `scope` only when given (the API), any key otherwise (the operator's CLI).
     * `keepOne` refuses to revoke an environment's last active key, so a client cannot lock its
     * environment out by mistake (the operator still can). Revoking a revoked key changes nothing
     * and says so (`AlreadyRevoked`), so a retried revocation is not audited twice.
     */
    const revokeKey = Effect.fn("TenantRepo.revokeKey")(function* (input: {
      readonly id: string
      readonly scope?: TenantScope | undefined
      readonly keepOne: boolean
    }) {
      const revoke = sql.withTransaction(
        Effect.gen(function* () {
          const found = yield* orDieOnRow(
            keyToRevoke({
              id: input.id,
              ...(input.scope ? { scope: { tenantId: input.scope.tenantId, environmentId: input.scope.environmentId } } : {})
            })
          )
          if (Option.isNone(found)) return { _tag: "NotFound" } as RevokeOutcome
          const key = found.value
          const scope = TenantScope.make({ tenantId: key.tenantId, environmentId: key.environmentId })
          if (key.revoked) return { _tag: "AlreadyRevoked", scope } as RevokeOutcome
          // locks the environment's active keys: two concurrent revocations cannot both pass the check
          const active = yield* sql<{ id: string }>`
            SELECT id FROM api_keys WHERE tenant_id = ${key.tenantId} AND environment_id = ${key.environmentId}
              AND revoked_at IS NULL FOR UPDATE`
          if (input.keepOne && active.length <= 1) return { _tag: "LastKey" } as RevokeOutcome
          yield* sql`UPDATE api_keys SET revoked_at = now() WHERE id = ${input.id} AND revoked_at IS NULL`
          return { _tag: "Revoked", scope } as RevokeOutcome
        })
      )
      return yield* input.scope ? inTenant(input.scope)(revoke) : asSystem("the operator revokes a key of any tenant")(revoke)
    })

    return { create, authenticate, environmentExists, listEnvironments, createKey, listKeys, revokeKey } as const
  })
}) {}

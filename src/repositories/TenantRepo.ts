/**
 * Tenants, environments and API keys. Keys are random 32-byte tokens shown once; only their
 * SHA-256 hash is stored. A key belongs to exactly one (tenant, environment).
 */
import { SqlClient } from "@effect/sql"
import { Effect, Option } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { EnvironmentId, newId, TenantId, TenantScope } from "../domain/Ids.js"

export const hashApiKey = (key: string): string => createHash("sha256").update(key).digest("hex")

export class TenantRepo extends Effect.Service<TenantRepo>()("flexprice/TenantRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient

    /** Creates a tenant (or reuses one by name) with an environment and a fresh API key. */
    const create = Effect.fn("tenant.create")(function* (name: string, environment: string) {
      const apiKey = `fp_${randomBytes(24).toString("base64url")}`
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const existing = yield* sql<{ id: string }>`SELECT id FROM tenants WHERE name = ${name} ORDER BY created_at LIMIT 1`
          const tenantId = existing[0] ? TenantId.make(existing[0].id) : newId.tenant()
          if (!existing[0]) yield* sql`INSERT INTO tenants ${sql.insert({ id: tenantId, name })}`
          const env = yield* sql<{ id: string }>`SELECT id FROM environments WHERE tenant_id = ${tenantId} AND name = ${environment}`
          const environmentId = env[0] ? EnvironmentId.make(env[0].id) : newId.environment()
          if (!env[0]) yield* sql`INSERT INTO environments ${sql.insert({ id: environmentId, tenantId, name: environment })}`
          yield* sql`INSERT INTO api_keys ${sql.insert({
            id: newId.apiKeyId(),
            tenantId,
            environmentId,
            keyHash: hashApiKey(apiKey),
            keyPrefix: apiKey.slice(0, 7)
          })}`
          return { tenantId, environmentId, apiKey }
        })
      )
    })

    const authenticate = Effect.fn("tenant.authenticate")(function* (apiKey: string) {
      const rows = yield* sql<{ tenantId: string; environmentId: string }>`
        SELECT tenant_id, environment_id FROM api_keys WHERE key_hash = ${hashApiKey(apiKey)} AND revoked_at IS NULL`
      return Option.map(Option.fromNullable(rows[0]), (r) =>
        TenantScope.make({ tenantId: TenantId.make(r.tenantId), environmentId: EnvironmentId.make(r.environmentId) })
      )
    })

    const environmentExists = (scope: TenantScope) =>
      Effect.map(
        sql`SELECT 1 FROM environments WHERE id = ${scope.environmentId} AND tenant_id = ${scope.tenantId}`,
        (rows) => rows.length > 0
      )

    /** Every tenant environment (the scheduler walks these). */
    const listEnvironments = Effect.map(
      sql<{ tenantId: string; id: string }>`SELECT tenant_id, id FROM environments ORDER BY tenant_id, id`,
      (rows) => rows.map((r) => TenantScope.make({ tenantId: TenantId.make(r.tenantId), environmentId: EnvironmentId.make(r.id) }))
    )

    return { create, authenticate, environmentExists, listEnvironments } as const
  })
}) {}

/** Handlers of the caller's API keys: create (shown once), list, revoke; each change audited. */
import { HttpApiBuilder } from "@effect/platform"
import { Effect, Option } from "effect"
import { Conflict, NotFound } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { AuditLog } from "../security/AuditLog.js"
import { FlexPriceApi } from "./Api.js"
import { orUnavailable } from "./Errors.js"
import { sourceIp } from "./Params.js"

export const TenantKeysLive = HttpApiBuilder.group(FlexPriceApi, "tenantKeys", (handlers) =>
  Effect.gen(function* () {
    const tenants = yield* TenantRepo
    const audit = yield* AuditLog
    return handlers
      .handle("create", () =>
        Effect.gen(function* () {
          const scope = yield* CurrentTenant
          const created = yield* tenants.createKey(scope)
          if (Option.isNone(created)) return yield* NotFound.of("environment", scope.environmentId)
          const k = created.value
          yield* audit.record({ action: "api_key.create", actor: "api", target: `api_key:${k.id}`, sourceIp: yield* sourceIp, details: { key_prefix: k.keyPrefix } })
          return { id: k.id, api_key: k.apiKey, key_prefix: k.keyPrefix, created_at: k.createdAt.toISOString() }
        }).pipe(orUnavailable)
      )
      .handle("list", () =>
        Effect.gen(function* () {
          const keys = yield* tenants.listKeys(yield* CurrentTenant)
          return {
            keys: keys.map((k) => ({
              id: k.id,
              key_prefix: k.keyPrefix,
              created_at: k.createdAt.toISOString(),
              revoked_at: k.revokedAt === null ? null : k.revokedAt.toISOString()
            }))
          }
        }).pipe(orUnavailable)
      )
      .handle("revoke", ({ path }) =>
        Effect.gen(function* () {
          const scope = yield* CurrentTenant
          const outcome = yield* tenants.revokeKey({ id: path.id, scope, keepOne: true })
          if (outcome._tag === "NotFound") return yield* NotFound.of("api_key", path.id)
          if (outcome._tag === "LastKey")
            return yield* Conflict.of("last_api_key", "this is the environment's last active API key; create another before revoking it", { id: path.id })
          // a retried DELETE (its first answer lost) gets the same answer; only the change is audited
          if (outcome._tag === "AlreadyRevoked") return { id: path.id, revoked: true as const }
          yield* audit.record({ action: "api_key.revoke", actor: "api", target: `api_key:${path.id}`, sourceIp: yield* sourceIp })
          return { id: path.id, revoked: true as const }
        }).pipe(orUnavailable)
      )
  })
)

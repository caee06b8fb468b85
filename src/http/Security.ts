/**
 * `x-api-key` authentication for every /v1 route. The key resolves to exactly one tenant
 * environment, which the middleware provides as CurrentTenant to the handler.
 */
import { HttpApiMiddleware, HttpApiSecurity } from "@effect/platform"
import { Effect, Layer, Option, Redacted } from "effect"
import { Unauthorized } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { TenantRepo } from "../repositories/TenantRepo.js"

export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("Authentication", {
  failure: Unauthorized,
  provides: CurrentTenant,
  security: { apiKey: HttpApiSecurity.apiKey({ key: "x-api-key", in: "header" }) }
}) {}

export const AuthenticationLive = Layer.effect(
  Authentication,
  Effect.gen(function* () {
    const tenants = yield* TenantRepo
    return {
      apiKey: (key: Redacted.Redacted<string>) =>
        Effect.gen(function* () {
          const value = Redacted.value(key)
          if (value === "")
            return yield* new Unauthorized({ code: "missing_api_key", message: "send your API key in the x-api-key header" })
          const scope = yield* tenants.authenticate(value).pipe(
            Effect.catchTag("SqlError", () =>
              Effect.fail(new Unauthorized({ code: "authentication_unavailable", message: "could not check the API key (database unavailable)" }))
            )
          )
          if (Option.isNone(scope)) return yield* new Unauthorized({ code: "invalid_api_key", message: "the API key is not valid" })
          return scope.value
        })
    }
  })
)

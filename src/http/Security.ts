/**
 * `x-api-key` authentication for every /v1 route. The key resolves to exactly one tenant
 * environment, which the middleware provides as CurrentTenant to the handler. Invalid keys are
 * counted per client address (AuthThrottle): past the limit the address gets 429 with
 * Retry-After, before any key is checked.
 */
import { HttpApiMiddleware, HttpApiSecurity, HttpApp, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Effect, Layer, Option, Redacted, Schema } from "effect"
import { TooManyRequests, Unauthorized } from "../domain/Errors.js"
import { TooManyRequestsResponse, UnauthorizedResponse } from "./ErrorContract.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { clientIp } from "../webhooks/WebhookConfig.js"
import { AuthThrottle } from "./AuthThrottle.js"

export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("Authentication", {
  failure: Schema.Union(UnauthorizedResponse, TooManyRequestsResponse),
  provides: CurrentTenant,
  security: { apiKey: HttpApiSecurity.apiKey({ key: "x-api-key", in: "header" }) }
}) {}

export const AuthenticationLive = Layer.effect(
  Authentication,
  Effect.gen(function* () {
    const tenants = yield* TenantRepo
    const throttle = yield* AuthThrottle
    return {
      apiKey: (key: Redacted.Redacted<string>) =>
        Effect.gen(function* () {
          const value = Redacted.value(key)
          if (value === "")
            return yield* new Unauthorized({ code: "missing_api_key", message: "send your API key in the x-api-key header" })
          const request = yield* HttpServerRequest.HttpServerRequest
          const ip = clientIp(Option.getOrUndefined(request.remoteAddress), request.headers["x-forwarded-for"], throttle.trustedProxies) ?? "unknown"
          const now = yield* Clock.currentTimeMillis
          const waitMs = throttle.table.blockedFor(ip, now)
          if (waitMs > 0) {
            const seconds = Math.max(1, Math.ceil(waitMs / 1000))
            yield* HttpApp.appendPreResponseHandler((_req, res) => Effect.succeed(HttpServerResponse.setHeader(res, "retry-after", String(seconds))))
            return yield* new TooManyRequests({
              code: "too_many_auth_failures",
              message: `too many invalid API keys from this address; retry after ${seconds} s`,
              details: { retry_after_seconds: seconds }
            })
          }
          const scope = yield* tenants.authenticate(value).pipe(
            Effect.catchTag("SqlError", () =>
              Effect.fail(new Unauthorized({ code: "authentication_unavailable", message: "could not check the API key (database unavailable)" }))
            )
          )
          if (Option.isNone(scope)) {
            throttle.table.recordFailure(ip, now)
            return yield* new Unauthorized({ code: "invalid_api_key", message: "the API key is not valid" })
          }
          return scope.value
        })
    }
  })
).pipe(Layer.provide(AuthThrottle.layer))

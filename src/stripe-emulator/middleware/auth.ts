/**
 * Authentication: the v2 meter event stream takes a session token, everything else the account's
 * secret key (Bearer, or Basic with the key as user name, as stripe-node and curl send it).
 */
import type { HttpServerRequest } from "@effect/platform"
import { Effect } from "effect"
import type { EmulatorContext } from "../context.js"
import { maskKey, StripeEmulatorError } from "../errors.js"

export const STREAM_PATH = "/v2/billing/meter_event_stream"

const authFailure = (message: string, v2: boolean, expired = false) =>
  new StripeEmulatorError({
    status: 401,
    type: expired ? "temporary_session_expired" : "invalid_request_error",
    message,
    code: expired ? "billing_meter_event_session_expired" : v2 ? "unauthorized" : undefined
  })

const bearer = (header: string | undefined): string | undefined => {
  if (!header) return undefined
  const b = /^Bearer\s+(.+)$/i.exec(header)
  if (b) return b[1]!.trim()
  const basic = /^Basic\s+(.+)$/i.exec(header)
  if (basic) {
    const decoded = Buffer.from(basic[1]!.trim(), "base64").toString("utf8")
    const colon = decoded.indexOf(":")
    return colon >= 0 ? decoded.slice(0, colon) : decoded
  }
  return undefined
}

export const authenticate = (
  ctx: EmulatorContext,
  request: HttpServerRequest.HttpServerRequest,
  call: { readonly path: string; readonly v2: boolean }
): Effect.Effect<void, StripeEmulatorError> =>
  Effect.gen(function* () {
    const { path, v2 } = call
    const token = bearer(request.headers["authorization"])
    if (token === undefined || token === "") {
      return yield* Effect.fail(
        authFailure(
          "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
          v2
        )
      )
    }
    const keyStatus = ctx.keys.get(token)
    if (path === STREAM_PATH) {
      if (keyStatus !== undefined) {
        return yield* Effect.fail(authFailure("This endpoint requires a meter event session authentication token.", true))
      }
      const status = ctx.state.checkSession(token, yield* ctx.now)
      if (status !== "valid") {
        return yield* Effect.fail(
          authFailure(
            status === "expired"
              ? "The meter event session has expired. Create a new meter event session."
              : "Unknown meter event session token. Create a new meter event session.",
            true,
            true
          )
        )
      }
    } else if (keyStatus === "expired") {
      // A rolled key past its expiry: 401 `api_key_expired`
      // (https://docs.stripe.com/error-codes#api-key-expired, https://docs.stripe.com/keys#rolling-keys).
      return yield* Effect.fail(
        new StripeEmulatorError({
          status: 401,
          type: "invalid_request_error",
          code: "api_key_expired",
          message: `Expired API Key provided: ${maskKey(token)}`
        })
      )
    } else if (keyStatus !== "active") {
      return yield* Effect.fail(authFailure(`Invalid API Key provided: ${maskKey(token)}`, v2))
    }
  })

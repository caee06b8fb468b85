/**
 * Stripe's edge, before a request is authenticated: rate limits (limits.ts) and the faults a test
 * injects (faults.ts). Over the limit → 429 before anything runs, never saved under an
 * Idempotency-Key.
 */
import type { HttpServerRequest } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Effect } from "effect"
import type { EmulatorContext } from "../context.js"
import { StripeEmulatorError } from "../errors.js"

const RATE_LIMIT_MESSAGE =
  "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits."

/** A 429 as Stripe sends it (https://docs.stripe.com/rate-limits): retryable, maybe with Retry-After. */
export const rateLimited = (ctx: EmulatorContext, v2: boolean, message = RATE_LIMIT_MESSAGE) => {
  const retryAfter = ctx.faults.retryAfterSeconds()
  return new StripeEmulatorError({
    status: 429,
    type: v2 ? "rate_limit" : "invalid_request_error",
    code: "rate_limit",
    message,
    headers: {
      "Stripe-Should-Retry": "true",
      ...(retryAfter !== undefined ? { "Retry-After": String(retryAfter) } : {})
    }
  })
}

/**
 * Admits the request or fails it with the injected answer. A 500 on a POST with an
 * Idempotency-Key happens while the endpoint executes, so it is not answered here: it comes back
 * as `executionFailure` and is saved and replayed like any other result (idempotency.ts).
 */
export const admit = (
  ctx: EmulatorContext,
  request: HttpServerRequest.HttpServerRequest,
  call: {
    readonly path: string
    readonly v2: boolean
    /** Frees the v1 customer + meter slot this request holds (idempotent; a no-op for others). */
    readonly release: Effect.Effect<void>
  }
): Effect.Effect<{ readonly executionFailure: number | undefined }, StripeEmulatorError> =>
  Effect.gen(function* () {
    const { path, v2 } = call
    if (!ctx.rateLimiter.admit(request.method, path)) return yield* Effect.fail(rateLimited(ctx, v2))

    const latency = ctx.faults.latencyMs(path)
    if (latency > 0) yield* Effect.sleep(latency)
    const decision = ctx.faults.decide(path, yield* ctx.now)
    switch (decision._tag) {
      case "drop": {
        ctx.counters.byStatus.set(0, (ctx.counters.byStatus.get(0) ?? 0) + 1)
        // The request never executes, so it holds no v1 customer + meter slot: freed before the
        // socket closes (the handler fiber never ends, so `ensuring` would never free it and
        // every later call for the pair would be refused as concurrent). Stripe's rule limits
        // concurrent *calls* (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits);
        // a connection that is gone is no call in flight.
        yield* call.release
        NodeHttpServerRequest.toIncomingMessage(request).socket.destroy()
        return yield* Effect.never
      }
      case "outage":
        return yield* Effect.fail(
          new StripeEmulatorError({
            status: 503,
            type: "api_error",
            message: "Stripe is temporarily unavailable (emulated outage).",
            headers: { "Stripe-Should-Retry": "true" }
          })
        )
      case "rate_limit":
        return yield* Effect.fail(rateLimited(ctx, v2))
      case "server_error":
        if (request.method === "POST" && request.headers["idempotency-key"] !== undefined) {
          return { executionFailure: decision.status }
        }
        return yield* Effect.fail(
          new StripeEmulatorError({
            status: decision.status,
            type: "api_error",
            message: "An unknown error occurred (emulated).",
            // Not saved under a key: a retry can succeed.
            headers: { "Stripe-Should-Retry": ctx.faults.serverErrorShouldRetry() === false ? "false" : "true" }
          })
        )
      case "none":
        return { executionFailure: undefined }
    }
  })

/**
 * The emulator's HTTP app: Stripe's routes (routes/*) behind the layers Stripe applies to every
 * call, in Stripe's order — rate limits and injected faults, authentication, idempotency keys,
 * crash-test holds, v1's one-call-per-customer-and-meter rule — plus the `/_emulator/*` control
 * plane (control.ts).
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import { type EmulatorContext, RequestInfo } from "./context.js"
import { makeControl } from "./control.js"
import { invalidRequest, type StripeEmulatorError } from "./errors.js"
import { record } from "./exchanges.js"
import { decodeForm } from "./form.js"
import { endpointKey, errorReply, newRequestId } from "./http.js"
import { authenticate } from "./middleware/auth.js"
import { admit, rateLimited } from "./middleware/faults.js"
import { hold, takeHold } from "./middleware/holds.js"
import { executeKeyed, keyed, replay, saveExecutionFailure, VALIDATION_CODES } from "./middleware/idempotency.js"
import { customerRoutes } from "./routes/customers.js"
import { eventRoutes } from "./routes/events.js"
import { meterEventRoutes } from "./routes/meterEvents.js"
import { meterRoutes } from "./routes/meters.js"

const bump = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1)

interface Call {
  readonly path: string
  readonly search: string
  readonly body: string
  /** Another v1 meter event call for the same customer + meter is in flight. */
  readonly concurrent: boolean
  /** Frees the v1 customer + meter slot this request holds (idempotent; a no-op for others). */
  readonly release: Effect.Effect<void>
}

/** Builds the whole HTTP app (API + control plane) over an emulator context. */
export const makeApp = (ctx: EmulatorContext) => {
  const router = HttpRouter.concatAll(customerRoutes(ctx), meterRoutes(ctx), meterEventRoutes(ctx), eventRoutes(ctx))
  const control = makeControl(ctx)

  /** Runs Stripe's route; its own errors become Stripe error bodies, unknown paths a 404. */
  const execute = (request: HttpServerRequest.HttpServerRequest, call: Call, info: RequestInfo["Type"]) =>
    router.pipe(
      Effect.map((response) => ({ response, validationFailure: false })),
      Effect.provideService(RequestInfo, info),
      Effect.catchTags({
        StripeEmulatorError: (e) =>
          Effect.succeed({
            response: errorReply(e, info.requestId),
            validationFailure: e.code !== undefined && VALIDATION_CODES.has(e.code)
          }),
        RouteNotFound: () =>
          Effect.succeed({
            response: errorReply(
              invalidRequest(
                `Unrecognized request URL (${request.method}: ${call.path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
                { status: 404 }
              ),
              info.requestId
            ),
            validationFailure: false
          })
      })
    )

  const api = (request: HttpServerRequest.HttpServerRequest, call: Call) => {
    const requestId = newRequestId()
    const v2 = call.path.startsWith("/v2/")
    const method = request.method
    ctx.counters.total++
    bump(ctx.counters.byEndpoint, endpointKey(method, call.path))

    const respond = (res: HttpServerResponse.HttpServerResponse) => {
      bump(ctx.counters.byStatus, res.status)
      return res.pipe(
        HttpServerResponse.setHeader("Request-Id", requestId),
        HttpServerResponse.setHeader("Stripe-Version", request.headers["stripe-version"] ?? "2026-10-28.endive")
      )
    }

    return Effect.gen(function* () {
      const { executionFailure } = yield* admit(ctx, request, { path: call.path, v2, release: call.release })
      yield* authenticate(ctx, request, { path: call.path, v2 })
      const k = keyed(request, call)
      const replayed = yield* replay(ctx, k)
      if (replayed !== undefined) return replayed

      const rule = takeHold(ctx, { method, path: call.path })
      if (rule && !rule.applyFirst) yield* hold(ctx, { method, path: call.path, applied: false })
      // v1 meter events: "one concurrent call per customer per meter"; the second is refused with
      // a 429 (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits).
      // After the key lookup: a replay of a saved result does not execute, so it takes no lock.
      if (call.concurrent && ctx.v1ConcurrencyLimit) {
        return yield* Effect.fail(
          rateLimited(
            ctx,
            v2,
            "Too many concurrent requests for this customer and meter: at most one meter event call per customer and meter may be in flight."
          )
        )
      }
      if (k.key !== null && executionFailure !== undefined) {
        return yield* Effect.fail(saveExecutionFailure(ctx, { ...k, key: k.key }, { status: executionFailure, requestId }))
      }
      const info = RequestInfo.of({ requestId, body: call.body, query: decodeForm(call.search), idempotencyKey: k.key })
      const response = yield* executeKeyed(ctx, k, requestId, execute(request, call, info))
      // Crash tests: Stripe has applied the request; the caller never hears back until release.
      if (rule && rule.applyFirst) yield* hold(ctx, { method, path: call.path, applied: true })
      return response
    }).pipe(
      Effect.catchTag("StripeEmulatorError", (e: StripeEmulatorError) => Effect.succeed(errorReply(e, requestId))),
      Effect.map(respond)
    )
  }

  return Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const url = request.url
    const q = url.indexOf("?")
    const path = q >= 0 ? url.slice(0, q) : url
    const search = q >= 0 ? url.slice(q + 1) : ""
    if (path.startsWith("/_emulator/")) return yield* control
    const method = request.method
    const body = method === "GET" || method === "HEAD" ? "" : yield* Effect.orElseSucceed(request.text, () => "")
    // v1: one concurrent call per customer + meter. Overlaps are counted (tests assert the client
    // keeps it at 0) and, unless `v1ConcurrencyLimit` is off, the second call is refused (see api).
    const pair = method === "POST" && path === "/v1/billing/meter_events" ? ctx.state.pairKey(decodeForm(body)) : undefined
    if (pair === undefined) {
      const call = { path, search, body, concurrent: false, release: Effect.void }
      return yield* api(request, call).pipe(Effect.tap((res) => record(request, call, res)))
    }
    const inFlight = ctx.v1InFlight.get(pair) ?? 0
    if (inFlight > 0) ctx.counters.v1Overlaps++
    ctx.v1InFlight.set(pair, inFlight + 1)
    let released = false
    const release = Effect.sync(() => {
      if (released) return
      released = true
      const n = (ctx.v1InFlight.get(pair) ?? 1) - 1
      if (n <= 0) ctx.v1InFlight.delete(pair)
      else ctx.v1InFlight.set(pair, n)
    })
    const call = { path, search, body, concurrent: inFlight > 0, release }
    return yield* api(request, call).pipe(
      Effect.tap((res) => record(request, call, res)),
      Effect.ensuring(release)
    )
  })
}

/**
 * Idempotent requests (https://docs.stripe.com/api/idempotent_requests): "Stripe's idempotency
 * works by saving the resulting status code and body of the first request made for any given
 * idempotency key, regardless of whether it succeeds or fails. Subsequent requests with the same
 * key return the same result, including 500 errors." Keys are scoped to POSTs here, as Stripe
 * ignores them on GET and DELETE.
 */
import { HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import { createHash } from "node:crypto"
import { stringifyJson } from "../../domain/Json.js"
import type { EmulatorContext, StoredResponse } from "../context.js"
import { errorBody, StripeEmulatorError } from "../errors.js"

/** 429s, auth failures and in-flight conflicts never reach execution, so they are not saved. */
const storable = (status: number) => status !== 429 && status !== 401 && status !== 409

/** Errors Stripe raises while validating parameters, before the endpoint executes. */
export const VALIDATION_CODES = new Set([
  "parameter_missing",
  "parameter_invalid",
  "parameter_invalid_integer",
  "parameter_unknown"
])

/** One keyed request: its key (null when none), and what identifies its parameters. */
export interface Keyed {
  readonly key: string | null
  readonly fingerprint: string
}

export const keyed = (request: { readonly method: string; readonly headers: Readonly<Record<string, string | undefined>> }, call: { readonly path: string; readonly body: string }): Keyed => ({
  key: request.method === "POST" ? (request.headers["idempotency-key"] ?? null) : null,
  fingerprint: createHash("sha256").update(`${request.method} ${call.path} ${call.body}`).digest("base64")
})

/**
 * The saved result for this key, answered again with `Idempotent-Replayed: true`; a 409 while the
 * first request still runs, a 400 when the key was first used with other parameters.
 */
export const replay = (
  ctx: EmulatorContext,
  k: Keyed
): Effect.Effect<HttpServerResponse.HttpServerResponse | undefined, StripeEmulatorError> => {
  if (k.key === null) return Effect.succeed(undefined)
  const stored = ctx.idempotency.get(k.key)
  if (stored === undefined) return Effect.succeed(undefined)
  if (stored === "in_flight") {
    return Effect.fail(
      new StripeEmulatorError({
        status: 409,
        type: "idempotency_error",
        message: `There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): ${k.key}. Please try again later.`
      })
    )
  }
  if (stored.fingerprint !== k.fingerprint) {
    return Effect.fail(
      new StripeEmulatorError({
        status: 400,
        type: "idempotency_error",
        message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${k.key}' if you meant to execute a different request.`
      })
    )
  }
  return Effect.succeed(
    HttpServerResponse.uint8Array(stored.body, {
      status: stored.status,
      contentType: "application/json",
      headers: { ...stored.headers, "Idempotent-Replayed": "true", "Original-Request": stored.headers["Request-Id"] ?? "" }
    })
  )
}

/**
 * An injected 500 while the endpoint executes: saved under the key and answered. It says
 * `Stripe-Should-Retry: false` unless the fault says otherwise
 * (https://docs.stripe.com/error-low-level#idempotency: the header tells whether a retry with the
 * same key can succeed; a saved 500 never will).
 */
export const saveExecutionFailure = (
  ctx: EmulatorContext,
  k: Keyed & { readonly key: string },
  failure: { readonly status: number; readonly requestId: string }
): StripeEmulatorError => {
  const e = new StripeEmulatorError({
    status: failure.status,
    type: "api_error",
    message: "An unknown error occurred (emulated).",
    headers: { "Stripe-Should-Retry": ctx.faults.serverErrorShouldRetry() === true ? "true" : "false" }
  })
  const stored: StoredResponse = {
    fingerprint: k.fingerprint,
    status: e.status,
    body: new TextEncoder().encode(stringifyJson(errorBody(e, failure.requestId))),
    headers: { "Request-Id": failure.requestId, ...e.headers }
  }
  ctx.idempotency.set(k.key, stored)
  return e
}

/**
 * Runs the endpoint under the key: in flight meanwhile, its result saved afterwards. "Results are
 * only saved if an API endpoint started executing. If incoming parameters failed validation, or
 * the request conflicted with another that was executing concurrently, no idempotent result is
 * saved" (https://docs.stripe.com/api/idempotent_requests).
 */
export const executeKeyed = <E, R>(
  ctx: EmulatorContext,
  k: Keyed,
  requestId: string,
  execute: Effect.Effect<{ readonly response: HttpServerResponse.HttpServerResponse; readonly validationFailure: boolean }, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R> => {
  const key = k.key
  if (key === null) return Effect.map(execute, (r) => r.response)
  ctx.idempotency.set(key, "in_flight")
  return execute.pipe(
    Effect.onExit(() =>
      Effect.sync(() => {
        if (ctx.idempotency.get(key) === "in_flight") ctx.idempotency.delete(key)
      })
    ),
    Effect.map(({ response, validationFailure }) => {
      if (!validationFailure && storable(response.status) && response.body._tag === "Uint8Array") {
        ctx.idempotency.set(key, {
          fingerprint: k.fingerprint,
          status: response.status,
          body: response.body.body,
          headers: { "Request-Id": requestId, ...(response.status >= 400 ? { "Stripe-Should-Retry": "false" } : {}) }
        })
      }
      return response
    })
  )
}

/**
 * Typed Stripe failures. Every error carries a stable snake_case `code` (what the sync ledger
 * stores as `error_code`) and a message that never contains an API key or session token:
 * messages coming from Stripe are passed through `scrubSecrets` before they are stored here.
 */
import { Data, Predicate, Schema } from "effect"
import { scrubString } from "../observability/Scrub.js"

/** 429, or a 400 with code `rate_limit`. `shouldRetry: false` mirrors `Stripe-Should-Retry: false`. */
export class StripeRateLimited extends Schema.TaggedError<StripeRateLimited>()("StripeRateLimited", {
  retryAfterMs: Schema.optional(Schema.Number),
  shouldRetry: Schema.optional(Schema.Boolean),
  requestId: Schema.optional(Schema.String)
}) {
  get code(): "stripe_rate_limited" {
    return "stripe_rate_limited"
  }
  override get message(): string {
    return `Stripe rate limit reached${this.retryAfterMs !== undefined ? ` (retry after ${this.retryAfterMs} ms)` : ""}`
  }
}

/** Stripe could not be reached or answered with a server error: network, 5xx, 409, timeout, dropped connection. */
export class StripeUnavailable extends Schema.TaggedError<StripeUnavailable>()("StripeUnavailable", {
  reason: Schema.Literal(
    "network",
    "timeout",
    "connection_dropped",
    "server_error",
    "conflict",
    "bad_response",
    "session_expired"
  ),
  status: Schema.optional(Schema.Number),
  shouldRetry: Schema.optional(Schema.Boolean),
  /**
   * `Idempotent-Replayed: true`: Stripe answered with the result it saved for this
   * Idempotency-Key earlier (https://docs.stripe.com/api/idempotent_requests), not a new failure.
   */
  replayed: Schema.optional(Schema.Boolean),
  requestId: Schema.optional(Schema.String),
  detail: Schema.optional(Schema.String)
}) {
  get code(): "stripe_unavailable" {
    return "stripe_unavailable"
  }
  override get message(): string {
    return `Stripe unavailable: ${this.reason}${this.status !== undefined ? ` (HTTP ${this.status})` : ""}${
      this.detail ? `: ${this.detail}` : ""
    }`
  }
}

/** 401 (bad or revoked key) or 403 (restricted key lacking a permission). Never retried. */
export class StripeAuthenticationFailed extends Schema.TaggedError<StripeAuthenticationFailed>()(
  "StripeAuthenticationFailed",
  {
    reason: Schema.Literal("invalid_api_key", "permission_denied"),
    status: Schema.Number,
    stripeMessage: Schema.optional(Schema.String),
    requestId: Schema.optional(Schema.String)
  }
) {
  get code(): "stripe_authentication_failed" {
    return "stripe_authentication_failed"
  }
  override get message(): string {
    return `Stripe rejected the credentials (${this.reason})${this.stripeMessage ? `: ${this.stripeMessage}` : ""}`
  }
}

/** 400/402/404 and other caller mistakes, with Stripe's own `code` and `param`. Never retried. */
export class StripeInvalidRequest extends Schema.TaggedError<StripeInvalidRequest>()("StripeInvalidRequest", {
  stripeCode: Schema.optional(Schema.String),
  param: Schema.optional(Schema.String),
  message: Schema.String,
  requestId: Schema.optional(Schema.String),
  status: Schema.Number
}) {
  get code(): "stripe_invalid_request" {
    return "stripe_invalid_request"
  }
}

/** The tenant's breaker is open: the call was not attempted. Batches stay pending. */
export class StripeCircuitOpen extends Schema.TaggedError<StripeCircuitOpen>()("StripeCircuitOpen", {
  retryInMs: Schema.Number
}) {
  get code(): "stripe_circuit_open" {
    return "stripe_circuit_open"
  }
  override get message(): string {
    return `Stripe calls suspended for this tenant after repeated failures; next probe in ${this.retryInMs} ms`
  }
}

export type StripeError =
  | StripeRateLimited
  | StripeUnavailable
  | StripeAuthenticationFailed
  | StripeInvalidRequest
  | StripeCircuitOpen

export const StripeError = Schema.Union(
  StripeRateLimited,
  StripeUnavailable,
  StripeAuthenticationFailed,
  StripeInvalidRequest,
  StripeCircuitOpen
)

export const isStripeError = (u: unknown): u is StripeError =>
  Predicate.isTagged(u, "StripeRateLimited") ||
  Predicate.isTagged(u, "StripeUnavailable") ||
  Predicate.isTagged(u, "StripeAuthenticationFailed") ||
  Predicate.isTagged(u, "StripeInvalidRequest") ||
  Predicate.isTagged(u, "StripeCircuitOpen")

/**
 * Internal: the v2 meter event session token expired (401 `billing_meter_event_session_expired`).
 * Handled inside the client by refreshing the session; never escapes it.
 */
export class SessionExpired extends Data.TaggedError("SessionExpired")<{ readonly requestId?: string | undefined }> {}

// ---------------------------------------------------------------------------------------------
// Mapping from the SDK's error classes

/**
 * Removes anything that looks like a secret, plus the given literal secrets, from text that came
 * from Stripe or the network. Stripe itself echoes masked keys; an emulator or proxy might not.
 */
export const scrubSecrets = (text: string, secrets: ReadonlyArray<string> = []): string =>
  scrubString(text, { literals: secrets, marker: "[redacted]" })

interface SdkErrorLike {
  readonly type?: string
  readonly rawType?: string
  readonly statusCode?: number
  readonly code?: string
  readonly param?: string
  readonly message?: string
  readonly requestId?: string
  readonly headers?: Record<string, string | ReadonlyArray<string> | undefined>
  readonly detail?: unknown
}

const header = (e: SdkErrorLike, name: string): string | undefined => {
  const h = e.headers?.[name]
  if (h === undefined) return undefined
  return typeof h === "string" ? h : h[0]
}

/** `Retry-After` is either delta-seconds or an HTTP date. */
export const parseRetryAfterMs = (value: string | undefined, nowMs: number): number | undefined => {
  if (value === undefined || value.trim() === "") return undefined
  const trimmed = value.trim()
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000)
  const at = Date.parse(trimmed)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

const CONNECTION_DROPPED_CODES = new Set([
  "ECONNRESET",
  "EPIPE",
  "ECONNABORTED",
  "ERR_STREAM_PREMATURE_CLOSE",
  "UND_ERR_SOCKET"
])

const connectionReason = (detail: unknown): "timeout" | "connection_dropped" | "network" => {
  const codes: Array<string> = []
  let cur: unknown = detail
  for (let i = 0; i < 4 && Predicate.isObject(cur); i++) {
    const o = cur as { code?: unknown; originalCode?: unknown; exception?: unknown; message?: unknown }
    if (typeof o.originalCode === "string") codes.push(o.originalCode)
    if (typeof o.code === "string") codes.push(o.code)
    if (typeof o.message === "string" && /socket hang up/i.test(o.message)) codes.push("ECONNRESET")
    cur = o.exception
  }
  if (codes.includes("ETIMEDOUT")) return "timeout"
  if (codes.some((c) => CONNECTION_DROPPED_CODES.has(c))) return "connection_dropped"
  // The SDK wraps a body cut off after the headers as "Failed to read the response body".
  if (Predicate.isObject(detail) && /response body/i.test(String((detail as { message?: unknown }).message)))
    return "connection_dropped"
  return "network"
}

/** True when the SDK error is Stripe's answer to an expired v2 meter event session. */
const isSessionExpired = (e: SdkErrorLike): boolean =>
  e.type === "TemporarySessionExpiredError" ||
  e.rawType === "temporary_session_expired" ||
  e.code === "billing_meter_event_session_expired"

/**
 * Maps anything the `stripe` SDK rejects with to a typed error. Non-Stripe values (programming
 * errors) are returned as `undefined` so the caller can treat them as defects.
 */
export const fromSdkError = (
  u: unknown,
  options: { readonly secrets: ReadonlyArray<string>; readonly nowMs: number }
): StripeError | SessionExpired | undefined => {
  if (!Predicate.isObject(u) || !(u instanceof Error)) return undefined
  const e = u as Error & SdkErrorLike
  if (typeof e.type !== "string" || !e.type.endsWith("Error")) return undefined
  const scrub = (s: string | undefined) => (s === undefined ? undefined : scrubSecrets(s, options.secrets))
  const requestId = e.requestId
  const status = e.statusCode
  const shouldRetryHeader = header(e, "stripe-should-retry")
  const shouldRetry = shouldRetryHeader === "false" ? false : shouldRetryHeader === "true" ? true : undefined

  if (isSessionExpired(e)) return new SessionExpired({ requestId })

  if (e.type === "StripeRateLimitError" || e.type === "RateLimitError" || status === 429) {
    return new StripeRateLimited({
      retryAfterMs: parseRetryAfterMs(header(e, "retry-after"), options.nowMs),
      shouldRetry,
      requestId
    })
  }
  if (e.type === "StripeConnectionError") {
    return new StripeUnavailable({
      reason: connectionReason(e.detail),
      requestId,
      detail: scrub(e.message)
    })
  }
  if (e.type === "StripeAuthenticationError" || status === 401) {
    return new StripeAuthenticationFailed({
      reason: "invalid_api_key",
      status: status ?? 401,
      stripeMessage: scrub(e.message),
      requestId
    })
  }
  if (e.type === "StripePermissionError" || status === 403) {
    return new StripeAuthenticationFailed({
      reason: "permission_denied",
      status: status ?? 403,
      stripeMessage: scrub(e.message),
      requestId
    })
  }
  if (status !== undefined && status >= 500) {
    const replayed = header(e, "idempotent-replayed") === "true" ? true : undefined
    return new StripeUnavailable({ reason: "server_error", status, shouldRetry, replayed, requestId, detail: scrub(e.message) })
  }
  if (status === 409) {
    // Stripe uses 409 for lock contention on the same object; it asks to be retried.
    return new StripeUnavailable({ reason: "conflict", status, shouldRetry, requestId, detail: scrub(e.message) })
  }
  if (status !== undefined && status >= 400) {
    return new StripeInvalidRequest({
      stripeCode: e.code ?? (e.rawType === "idempotency_error" ? "idempotency_error" : undefined),
      param: e.param,
      message: scrub(e.message) ?? "invalid request",
      requestId,
      status
    })
  }
  // StripeAPIError without a status: the body was not JSON (a proxy page, a truncated answer).
  return new StripeUnavailable({ reason: "bad_response", status, requestId, detail: scrub(e.message) })
}

export { isDuplicateMeterEvent } from "./StripeErrorClass.js"

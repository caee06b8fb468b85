/**
 * What each Stripe failure means, in one place: which are retried and under which budget
 * (StripeRetry), which count against the circuit breaker, the outcome label and HTTP status the
 * client's metrics and spans record, and what the sync does with a batch that failed with it.
 * The mapping from the SDK's error classes to these tags is `fromSdkError` (StripeErrors.ts).
 */
import type {
  SessionExpired,
  StripeError,
  StripeRateLimited,
  StripeUnavailable
} from "./StripeErrors.js"

type AnyFailure = StripeError | SessionExpired

/** Any tagged failure (retry schedules see the client's errors as their input). */
export type TaggedFailure = { readonly _tag: string }

// ---- retries (StripeRetry.ts)

/** A 429 Stripe did not mark `Stripe-Should-Retry: false`. */
export const isRetryableRateLimited = (e: TaggedFailure): e is StripeRateLimited =>
  e._tag === "StripeRateLimited" && (e as StripeRateLimited).shouldRetry !== false

/** Network, timeout, 5xx, 409, unless Stripe said `Stripe-Should-Retry: false`. */
export const isRetryableUnavailable = (e: TaggedFailure): e is StripeUnavailable =>
  e._tag === "StripeUnavailable" && (e as StripeUnavailable).shouldRetry !== false

/**
 * For a call whose resend is safe whatever Stripe did with the first one — a meter event send,
 * which Stripe deduplicates by `identifier` for 24 hours
 * (https://docs.stripe.com/api/billing/meter-event/create, `identifier`) — a 5xx is retried even
 * under `Stripe-Should-Retry: false`. Stripe sends that header on a 500 it saved under the
 * request's Idempotency-Key (https://docs.stripe.com/api/idempotent_requests: "results are
 * saved only if an API endpoint started executing … including 500 errors"), meaning "this key
 * will replay the same 500"; every attempt of such a call goes out under a new key (v1: a fresh
 * key per attempt, StripeClientLive; v2: stripe-node makes one per request), so the retry is
 * executed, not replayed. Other unavailable failures follow the header.
 */
export const isRetryableUnavailableResendSafe = (e: TaggedFailure): e is StripeUnavailable =>
  isRetryableUnavailable(e) ||
  (e._tag === "StripeUnavailable" &&
    (e as StripeUnavailable).reason === "server_error" &&
    ((e as StripeUnavailable).status ?? 0) >= 500)

/**
 * A 5xx Stripe replayed from an earlier request under the same Idempotency-Key
 * (`Idempotent-Replayed: true`, https://docs.stripe.com/api/idempotent_requests): an old answer,
 * not news about Stripe now. Retried at once (no back-off) and never counted by the breaker.
 */
export const isReplayedServerError = (e: TaggedFailure): e is StripeUnavailable =>
  e._tag === "StripeUnavailable" && (e as StripeUnavailable).replayed === true

// ---- circuit breaker

/**
 * Only outages and exhausted rate limits say Stripe is unwell; a 400 says it is up, and a replayed
 * 5xx says only what Stripe answered some earlier request.
 */
export const countsAsBreakerFailure = (e: AnyFailure): boolean =>
  (e._tag === "StripeUnavailable" && !isReplayedServerError(e)) || e._tag === "StripeRateLimited"

// ---- metrics and spans

/** The HTTP status a failure stands for (none for a call the breaker refused). */
export const httpStatusOf = (e: AnyFailure): number | undefined => {
  switch (e._tag) {
    case "StripeRateLimited":
      return 429
    case "StripeUnavailable":
      return e.status
    case "StripeAuthenticationFailed":
    case "StripeInvalidRequest":
      return e.status
    case "SessionExpired":
      return 401
    case "StripeCircuitOpen":
      return undefined
  }
}

/** `outcome` label of `flexprice_stripe_calls_total` / call duration for a failure. */
export const outcomeOf = (e: AnyFailure): string => {
  switch (e._tag) {
    case "StripeRateLimited":
      return "rate_limited"
    case "StripeUnavailable":
      return "unavailable"
    case "StripeAuthenticationFailed":
      return "auth_failed"
    case "StripeInvalidRequest":
      return "invalid_request"
    case "StripeCircuitOpen":
      return "circuit_open"
    case "SessionExpired":
      return "session_expired"
  }
}

export const requestIdOf = (e: AnyFailure): string | undefined =>
  "requestId" in e && typeof e.requestId === "string" ? e.requestId : undefined

// ---- meter events

/**
 * Stripe's answer when a meter event with the same identifier was already accepted
 * ("An event already exists with identifier ..."). The event is delivered: not a failure.
 */
export const isDuplicateMeterEvent = (e: StripeError): boolean =>
  e._tag === "StripeInvalidRequest" &&
  e.status === 400 &&
  (e.stripeCode === "duplicate_meter_event" ||
    e.stripeCode === "meter_event_identifier_already_exists" ||
    /already exists with (?:the )?identifier|identifier .*already exists|duplicate.*identifier/i.test(e.message))

// ---- what the sync does with a failed batch

/**
 * An outage, a rate-limit storm or an open breaker: the batch stays pending (its identifier
 * makes the resend safe) and the run stops pushing.
 */
export const isTransient = (e: StripeError): boolean =>
  e._tag === "StripeRateLimited" || e._tag === "StripeUnavailable" || e._tag === "StripeCircuitOpen"

/**
 * A transient failure after which the run stops pushing: the breaker is open (Stripe is down) or
 * Stripe kept rate limiting through the client's back-off. A plain 5xx or lost connection stops
 * only its own batch (Push.ts).
 */
export const stopsThePush = (e: StripeError): boolean => e._tag === "StripeCircuitOpen" || e._tag === "StripeRateLimited"

/** Stripe refuses the event's timestamp as too old: the batch can never be delivered. */
export const isTooLate = (e: StripeError): boolean =>
  e._tag === "StripeInvalidRequest" && e.stripeCode === "timestamp_too_far_in_past"

/** The code and message a failed batch records (Stripe's own code for an invalid request). */
export const errorInfo = (e: StripeError): { code: string; message: string } => {
  switch (e._tag) {
    case "StripeInvalidRequest":
      return { code: e.stripeCode ?? e.code, message: e.message }
    default:
      return { code: e.code, message: e.message }
  }
}

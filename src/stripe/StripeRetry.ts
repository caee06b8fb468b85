/**
 * The one place where Stripe retry rules live (requirements Task 9):
 * - rate limited (429) → exponential backoff with jitter, 5 retries; `Stripe-Should-Retry: false`
 *   stops at once; `Retry-After` is a floor on the wait;
 * - unavailable (network, timeout, 5xx, 409) → linear backoff, 3 retries; a 5xx Stripe replayed
 *   from a saved result (`Idempotent-Replayed: true`) is retried without waiting;
 * - authentication / invalid request / circuit open → no retry.
 * Which failures are retryable is decided in StripeErrorClass.ts.
 * The SDK's own retries are off (`maxNetworkRetries: 0`), so these are the only ones.
 */
import { Duration, Effect, Schedule } from "effect"
import {
  isReplayedServerError,
  isRetryableRateLimited,
  isRetryableUnavailable,
  isRetryableUnavailableResendSafe,
  type TaggedFailure
} from "./StripeErrorClass.js"

export interface RetrySettings {
  /** First backoff for 429s; doubles each retry, jittered (0.8x–1.2x). */
  readonly rateLimitedBase: Duration.DurationInput
  readonly rateLimitedRetries: number
  /** Cap on a single 429 wait, including an honoured Retry-After. */
  readonly rateLimitedMaxDelay: Duration.DurationInput
  /** Linear step for unavailable: waits base, 2×base, 3×base. */
  readonly unavailableBase: Duration.DurationInput
  readonly unavailableRetries: number
}

export const defaultRetrySettings: RetrySettings = {
  rateLimitedBase: "500 millis",
  rateLimitedRetries: 5,
  rateLimitedMaxDelay: "30 seconds",
  unavailableBase: "1 second",
  unavailableRetries: 3
}

/** Retry settings with tiny delays, for tests and benchmarks against the emulator. */
export const fastRetrySettings: RetrySettings = {
  rateLimitedBase: "5 millis",
  rateLimitedRetries: 5,
  rateLimitedMaxDelay: "200 millis",
  unavailableBase: "5 millis",
  unavailableRetries: 3
}

/** What the policies look at: any tagged failure; only the two retryable tags are ever retried. */
export type RetryInput = TaggedFailure

export { isRetryableRateLimited, isRetryableUnavailable }

/**
 * The policies, as Schedules over the failure. Each accepts only its own tag (`whileInput`), so
 * composing them cannot retry an error under the other's budget.
 */
export const policy = (
  settings: RetrySettings = defaultRetrySettings,
  options: { readonly resendSafe?: boolean } = {}
) => {
  const maxDelay = Duration.decode(settings.rateLimitedMaxDelay)
  const rateLimitedBase: Schedule.Schedule<unknown, RetryInput> = Schedule.exponential(settings.rateLimitedBase).pipe(
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(settings.rateLimitedRetries))
  )
  const rateLimited: Schedule.Schedule<RetryInput, RetryInput> = Schedule.passthrough(rateLimitedBase).pipe(
    Schedule.whileInput(isRetryableRateLimited),
    Schedule.modifyDelay((e, delay) => {
      const retryAfterMs = isRetryableRateLimited(e) ? e.retryAfterMs : undefined
      const floor = retryAfterMs !== undefined ? Duration.millis(retryAfterMs) : Duration.zero
      return Duration.min(Duration.max(delay, floor), maxDelay)
    })
  )
  const unavailableBase: Schedule.Schedule<unknown, RetryInput> = Schedule.linear(settings.unavailableBase).pipe(
    Schedule.intersect(Schedule.recurs(settings.unavailableRetries))
  )
  const unavailable: Schedule.Schedule<RetryInput, RetryInput> = Schedule.passthrough(unavailableBase).pipe(
    // A resend-safe call (meter events) retries a 5xx even under Stripe-Should-Retry: false.
    Schedule.whileInput(options.resendSafe === true ? isRetryableUnavailableResendSafe : isRetryableUnavailable),
    // A replayed 5xx is an old answer, not Stripe struggling now: the next attempt (a new key)
    // goes at once.
    Schedule.modifyDelay((e, delay) => (isReplayedServerError(e) ? Duration.zero : delay))
  )
  return { rateLimited, unavailable } as const
}

export type RetryReason = "rate_limited" | "unavailable"

/**
 * Applies both policies. Unavailable is retried inside, rate limited outside: a pure 429 storm
 * makes 1 + 5 attempts, a pure outage 1 + 3. `onRetry` runs once per retry actually scheduled
 * (not for the final, exhausted failure).
 */
export const apply =
  <R2 = never>(
    settings: RetrySettings = defaultRetrySettings,
    onRetry: (reason: RetryReason, error: RetryInput) => Effect.Effect<void, never, R2> = () => Effect.void
  ) =>
  <A, E extends RetryInput, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | R2> =>
    applyPolicies(policy(settings), onRetry)(self)

/** `apply` over policies built once (the client builds them at start, not per call). */
export const applyPolicies =
  <R2 = never>(
    p: ReturnType<typeof policy>,
    onRetry: (reason: RetryReason, error: RetryInput) => Effect.Effect<void, never, R2> = () => Effect.void
  ) =>
  <A, E extends RetryInput, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | R2> => {
    const observed = (reason: RetryReason, schedule: Schedule.Schedule<RetryInput, RetryInput>) =>
      Schedule.onDecision(schedule, (error, decision) =>
        decision._tag === "Continue" ? onRetry(reason, error) : Effect.void
      )
    return self.pipe(
      Effect.retry(observed("unavailable", p.unavailable)),
      Effect.retry(observed("rate_limited", p.rateLimited))
    )
  }

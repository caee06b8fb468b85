import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Ref, TestClock } from "effect"
import {
  StripeAuthenticationFailed,
  type StripeError,
  StripeInvalidRequest,
  StripeRateLimited,
  StripeUnavailable
} from "../../src/stripe/StripeErrors.js"
import * as StripeRetry from "../../src/stripe/StripeRetry.js"

const settings: StripeRetry.RetrySettings = {
  rateLimitedBase: "100 millis",
  rateLimitedRetries: 5,
  rateLimitedMaxDelay: "10 seconds",
  unavailableBase: "100 millis",
  unavailableRetries: 3
}

/** Runs a call that fails with `errors[i]` on attempt i (then the last one forever), under TestClock. */
const run = (errors: ReadonlyArray<StripeError>, clockMs: number) =>
  Effect.gen(function* () {
    const attempts = yield* Ref.make(0)
    const retries = yield* Ref.make<Array<string>>([])
    const call = Ref.getAndUpdate(attempts, (n) => n + 1).pipe(
      Effect.flatMap((i) => Effect.fail(errors[Math.min(i, errors.length - 1)]!))
    )
    const fiber = yield* Effect.fork(
      call.pipe(StripeRetry.apply(settings, (reason) => Ref.update(retries, (r) => [...r, reason])))
    )
    yield* TestClock.adjust(clockMs)
    const done = yield* Fiber.poll(fiber)
    return { attempts: yield* Ref.get(attempts), retries: yield* Ref.get(retries), done: done._tag === "Some" }
  })

describe("StripeRetry", () => {
  it.effect("rate limited: 1 attempt + 5 retries, then gives up", () =>
    Effect.gen(function* () {
      const r = yield* run([new StripeRateLimited({})], 60_000)
      expect(r.attempts).toBe(6)
      expect(r.retries).toEqual(Array(5).fill("rate_limited"))
      expect(r.done).toBe(true)
    }))

  it.effect("rate limited backs off exponentially (not all retries within the first second)", () =>
    Effect.gen(function* () {
      // base 100 ms ×2 each (jitter 0.8–1.2): cumulative ≥ 80+160+320+640 ms before the 5th attempt.
      const r = yield* run([new StripeRateLimited({})], 1_000)
      expect(r.attempts).toBeLessThan(6)
      expect(r.attempts).toBeGreaterThanOrEqual(4)
    }))

  it.effect("Stripe-Should-Retry: false stops at once", () =>
    Effect.gen(function* () {
      const r = yield* run([new StripeRateLimited({ shouldRetry: false })], 60_000)
      expect(r.attempts).toBe(1)
      expect(r.retries).toEqual([])
    }))

  it.effect("Retry-After is a floor on the wait", () =>
    Effect.gen(function* () {
      const early = yield* run([new StripeRateLimited({ retryAfterMs: 2_000 })], 1_999)
      expect(early.attempts).toBe(1)
      const onTime = yield* run([new StripeRateLimited({ retryAfterMs: 2_000 }), new StripeInvalidRequest({ message: "x", status: 400 })], 2_000)
      expect(onTime.attempts).toBe(2)
    }))

  it.effect("unavailable: linear backoff, exactly 3 retries", () =>
    Effect.gen(function* () {
      // waits 100, 200, 300 ms
      const at250 = yield* run([new StripeUnavailable({ reason: "server_error", status: 500 })], 250)
      expect(at250.attempts).toBe(2)
      const at300 = yield* run([new StripeUnavailable({ reason: "server_error", status: 500 })], 300)
      expect(at300.attempts).toBe(3)
      const all = yield* run([new StripeUnavailable({ reason: "network" })], 10_000)
      expect(all.attempts).toBe(4)
      expect(all.retries).toEqual(["unavailable", "unavailable", "unavailable"])
    }))

  it.effect("a resend-safe call retries a 5xx saved under its key, and a replayed one without waiting", () =>
    Effect.gen(function* () {
      const runSafe = (errors: ReadonlyArray<StripeError>, clockMs: number) =>
        Effect.gen(function* () {
          const attempts = yield* Ref.make(0)
          const call = Ref.getAndUpdate(attempts, (n) => n + 1).pipe(
            Effect.flatMap((i) => Effect.fail(errors[Math.min(i, errors.length - 1)]!))
          )
          const fiber = yield* Effect.fork(call.pipe(StripeRetry.applyPolicies(StripeRetry.policy(settings, { resendSafe: true }))))
          yield* TestClock.adjust(clockMs)
          yield* Fiber.poll(fiber)
          return yield* Ref.get(attempts)
        })
      const saved = new StripeUnavailable({ reason: "server_error", status: 500, shouldRetry: false })
      const replayed = new StripeUnavailable({ reason: "server_error", status: 500, shouldRetry: false, replayed: true })
      // Stripe-Should-Retry: false stops a standard call, not a resend-safe one (next key is new)
      expect((yield* run([saved], 10_000)).attempts).toBe(1)
      expect(yield* runSafe([saved], 10_000)).toBe(4)
      // a fresh 500 waits its back-off (100 ms); a replayed one goes again at once
      expect(yield* runSafe([saved, new StripeInvalidRequest({ message: "x", status: 400 })], 0)).toBe(1)
      expect(yield* runSafe([replayed, new StripeInvalidRequest({ message: "x", status: 400 })], 0)).toBe(2)
    }))

  it.effect("authentication and invalid requests are never retried", () =>
    Effect.gen(function* () {
      const auth = yield* run([new StripeAuthenticationFailed({ reason: "invalid_api_key", status: 401 })], 10_000)
      expect(auth.attempts).toBe(1)
      const invalid = yield* run([new StripeInvalidRequest({ message: "bad", status: 400 })], 10_000)
      expect(invalid.attempts).toBe(1)
    }))

  it.effect("a retried failure that turns into an invalid request stops there", () =>
    Effect.gen(function* () {
      const r = yield* run(
        [new StripeUnavailable({ reason: "timeout" }), new StripeRateLimited({}), new StripeInvalidRequest({ message: "bad", status: 400 })],
        10_000
      )
      expect(r.attempts).toBe(3)
      expect(r.retries).toEqual(["unavailable", "rate_limited"])
    }))
})

import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Ref, TestClock } from "effect"
import * as CircuitBreaker from "../../src/stripe/CircuitBreaker.js"
import { StripeCircuitOpen } from "../../src/stripe/StripeErrors.js"

class Boom {
  readonly _tag = "Boom"
  constructor(readonly counts: boolean) {}
}

const settings: CircuitBreaker.CircuitBreakerSettings = {
  consecutiveFailures: 3,
  failureRatio: 0.5,
  window: "60 seconds",
  minimumCalls: 10,
  cooldown: "30 seconds"
}

const harness = (s: CircuitBreaker.CircuitBreakerSettings = settings) =>
  Effect.gen(function* () {
    const transitions = yield* Ref.make<Array<string>>([])
    const breaker = yield* CircuitBreaker.make(
      s,
      (from, to) => Ref.update(transitions, (t) => [...t, `${from}->${to}`]),
      (retryInMs) => new StripeCircuitOpen({ retryInMs })
    )
    const runs = yield* Ref.make(0)
    const call = (outcome: "ok" | "fail" | "ignored") =>
      breaker.protect(
        Ref.update(runs, (n) => n + 1).pipe(
          Effect.zipRight(
            outcome === "ok" ? Effect.succeed("ok" as const) : Effect.fail(new Boom(outcome === "fail"))
          )
        ),
        (e) => e.counts
      )
    return { breaker, call, runs, transitions }
  })

describe("CircuitBreaker", () => {
  it.effect("opens after N consecutive failures and then fails fast without running the call", () =>
    Effect.gen(function* () {
      const { breaker, call, runs, transitions } = yield* harness()
      for (let i = 0; i < 2; i++) yield* Effect.exit(call("fail"))
      expect(yield* breaker.state).toBe("closed")
      yield* Effect.exit(call("fail"))
      expect(yield* breaker.state).toBe("open")
      expect(yield* Ref.get(runs)).toBe(3)

      const rejected = yield* Effect.flip(call("ok"))
      expect(rejected._tag).toBe("StripeCircuitOpen")
      if (rejected._tag === "StripeCircuitOpen") expect(rejected.retryInMs).toBe(30_000)
      expect(yield* Ref.get(runs)).toBe(3) // not attempted
      expect(yield* Ref.get(transitions)).toEqual(["closed->open"])
    }))

  it.effect("a success resets the consecutive count", () =>
    Effect.gen(function* () {
      const { breaker, call } = yield* harness()
      yield* Effect.exit(call("fail"))
      yield* Effect.exit(call("fail"))
      yield* call("ok")
      yield* Effect.exit(call("fail"))
      yield* Effect.exit(call("fail"))
      expect(yield* breaker.state).toBe("closed")
    }))

  it.effect("failures the caller does not count (invalid requests) never open it", () =>
    Effect.gen(function* () {
      const { breaker, call } = yield* harness()
      for (let i = 0; i < 20; i++) yield* Effect.exit(call("ignored"))
      expect(yield* breaker.state).toBe("closed")
    }))

  it.effect("half-opens after the cool-down, lets exactly one probe through, closes on its success", () =>
    Effect.gen(function* () {
      const { breaker, call, runs, transitions } = yield* harness()
      for (let i = 0; i < 3; i++) yield* Effect.exit(call("fail"))
      yield* TestClock.adjust("29 seconds")
      expect((yield* Effect.flip(call("ok")))._tag).toBe("StripeCircuitOpen")
      yield* TestClock.adjust("1 second")

      // The probe blocks until released, so a concurrent call sees the breaker half-open.
      const gate = yield* Deferred.make<void>()
      const probe = yield* Effect.fork(breaker.protect(Deferred.await(gate).pipe(Effect.as("probe")), () => true))
      yield* Effect.yieldNow()
      const concurrent = yield* Effect.flip(call("ok"))
      expect(concurrent._tag).toBe("StripeCircuitOpen")
      const before = yield* Ref.get(runs)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(probe)).toBe("probe")
      expect(yield* breaker.state).toBe("closed")
      expect(yield* call("ok")).toBe("ok")
      expect(yield* Ref.get(runs)).toBe(before + 1)
      expect(yield* Ref.get(transitions)).toEqual(["closed->open", "open->half_open", "half_open->closed"])
    }))

  it.effect("a failed probe re-opens it for another cool-down", () =>
    Effect.gen(function* () {
      const { breaker, call, transitions } = yield* harness()
      for (let i = 0; i < 3; i++) yield* Effect.exit(call("fail"))
      yield* TestClock.adjust("30 seconds")
      yield* Effect.exit(call("fail")) // the probe
      expect(yield* breaker.state).toBe("open")
      yield* TestClock.adjust("10 seconds")
      const again = yield* Effect.flip(call("ok"))
      expect(again._tag === "StripeCircuitOpen" && again.retryInMs).toBe(20_000)
      yield* TestClock.adjust("20 seconds")
      expect(yield* call("ok")).toBe("ok")
      expect(yield* Ref.get(transitions)).toEqual([
        "closed->open",
        "open->half_open",
        "half_open->open",
        "open->half_open",
        "half_open->closed"
      ])
    }))

  it.effect("opens on the failure ratio once the window holds the minimum number of calls", () =>
    Effect.gen(function* () {
      const { breaker, call } = yield* harness({ ...settings, consecutiveFailures: 100 })
      // fail, ok, fail, ok, ... : never 2 in a row, ratio 0.5
      for (let i = 0; i < 9; i++) {
        yield* Effect.exit(call(i % 2 === 0 ? "fail" : "ok"))
        yield* TestClock.adjust("1 second")
      }
      expect(yield* breaker.state).toBe("closed") // 5/9 but only 9 calls
      yield* Effect.exit(call("ok")) // 5/10 = 0.5
      expect(yield* breaker.state).toBe("open")
    }))

  it.effect("failures older than the window are forgotten", () =>
    Effect.gen(function* () {
      const { breaker, call } = yield* harness({ ...settings, consecutiveFailures: 100 })
      for (let i = 0; i < 4; i++) yield* Effect.exit(call("fail"))
      yield* call("ok")
      yield* TestClock.adjust("61 seconds")
      // Had the 4 old failures counted, 4/10 + this run's 1 would be 5/10.
      yield* Effect.exit(call("fail"))
      for (let i = 0; i < 9; i++) yield* call("ok")
      expect(yield* breaker.state).toBe("closed")
    }))
})

/**
 * Time-dependent client rules under TestClock: the client's limiter and session expiry run on
 * Effect's clock, while the emulator answers over real sockets in real time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { countOf, realSleep, setup } from "./support.js"

/** Waits (real time) until the emulator has seen at least `n` requests, then a little more. */
const settle = (emulator: StripeEmulatorHandle, n: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 10_000
    while (emulator.totalCalls() < n && Date.now() < deadline) yield* realSleep(5)
    yield* realSleep(60) // anything over the ceiling would arrive now
    return emulator.totalCalls()
  })

describe("StripeClient back-pressure", () => {
  it.live(
    "a burst of 1,000 calls is held to the configured per-tenant rate (real clock, ceiling checked every 50 ms)",
    () =>
      Effect.gen(function* () {
        const perSecond = 250
        const { emulator, client, ref } = yield* setup({ rateLimitTestPerSecond: perSecond, maxConcurrency: 64 })
        const started = Date.now()
        const burst = yield* Effect.fork(
          Effect.all(
            Array.from({ length: 1_000 }, () => client.retrieveAccount(ref)),
            { concurrency: "unbounded", discard: true }
          )
        )
        const samples: Array<{ readonly seconds: number; readonly calls: number }> = []
        while (emulator.totalCalls() < 1_000 && Date.now() - started < 50_000) {
          yield* realSleep(50)
          const calls = emulator.totalCalls()
          samples.push({ seconds: (Date.now() - started) / 1000, calls })
        }
        yield* Fiber.join(burst)
        // A token bucket allows one bucket at once, then `perSecond` a second; sleeps only run late.
        for (const s of samples) expect(s.calls).toBeLessThanOrEqual(perSecond + Math.ceil(perSecond * s.seconds))
        expect(samples[samples.length - 1]!.seconds).toBeGreaterThanOrEqual((1_000 - perSecond) / perSecond)
        // Every call succeeded (the join did not fail); on a loaded machine a few may have needed a retry.
        expect(countOf(emulator.callCounts(), "GET /v1/account")).toBeGreaterThanOrEqual(1_000)
      }).pipe(Effect.scoped),
    60_000
  )


  it.effect("the default test-mode limit (20/s): exactly one bucket, then 20 a second (TestClock)", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup({ rateLimitTestPerSecond: 20 })
      const burst = yield* Effect.fork(
        Effect.all(
          Array.from({ length: 80 }, () => client.retrieveAccount(ref)),
          { concurrency: "unbounded", discard: true }
        )
      )
      const seen: Array<number> = [yield* settle(emulator, 20)]
      for (let s = 1; s <= 3; s++) {
        yield* TestClock.adjust("1 second")
        seen.push(yield* settle(emulator, 20 * (s + 1)))
      }
      expect(seen).toEqual([20, 40, 60, 80])
      yield* Fiber.join(burst)
    }).pipe(Effect.scoped))

  it.effect("live mode gets its own, larger budget (TestClock)", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup({ rateLimitTestPerSecond: 5, rateLimitLivePerSecond: 30 })
      const live = { ...ref, livemode: true }
      const fiber = yield* Effect.fork(
        Effect.all(
          [
            ...Array.from({ length: 10 }, () => client.retrieveAccount(ref)),
            ...Array.from({ length: 40 }, () => client.retrieveAccount(live))
          ],
          { concurrency: "unbounded", discard: true }
        )
      )
      expect(yield* settle(emulator, 35)).toBe(35) // 5 test + 30 live
      yield* TestClock.adjust("1 second")
      expect(yield* settle(emulator, 50)).toBe(50) // +5 test, +10 remaining live
      yield* Fiber.join(fiber)
    }).pipe(Effect.scoped))

  it.effect("the session token is refreshed about a minute before its 15-minute expiry, without a 401", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      yield* emulator.createMeter({ display_name: "Calls", event_name: "api_calls", default_aggregation: { formula: "sum" } })
      const customer = (yield* emulator.createCustomer({ name: "T" })).id
      const at = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000)
      const send = (id: string) =>
        client.sendMeterEventsStream(ref, [
          { eventName: "api_calls", identifier: id, timestamp: at, payload: { stripe_customer_id: customer, value: "1" } }
        ])
      const sessions = () => countOf(emulator.callCounts(), "POST /v2/billing/meter_event_session")

      yield* send("e1")
      expect(sessions()).toBe(1)
      yield* TestClock.adjust("13 minutes")
      yield* send("e2")
      expect(sessions()).toBe(1) // still well inside its lifetime
      yield* TestClock.adjust("61 seconds") // 14:01 — within the refresh margin
      yield* send("e3")
      expect(sessions()).toBe(2)
      expect(countOf(emulator.statusCounts(), "401")).toBe(0)
      expect(emulator.total(customer, "api_calls")).toEqual({ sum: "3", count: 3 })
    }).pipe(Effect.scoped))
})

import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer } from "effect"
import { makeStripeEmulator } from "../../src/stripe-emulator/index.js"
import { StripeClient } from "../../src/stripe/StripeClient.js"
import { defaultSettings, settingsConfig } from "../../src/stripe/StripeSettings.js"
import { refFor, TEST_KEY } from "./support.js"

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("Stripe client settings", () => {
  it.effect("defaults: Stripe's hosts, 30 s timeout, 90/20 r/s, 8 concurrent", () =>
    Effect.gen(function* () {
      const s = yield* settingsConfig.pipe(withEnv({}))
      expect(s.apiBase).toBe("https://api.stripe.com")
      expect(s.meterEventsApiBase).toBe("https://meter-events.stripe.com")
      expect(Duration.toSeconds(Duration.decode(s.timeout))).toBe(30)
      expect([s.rateLimitLivePerSecond, s.rateLimitTestPerSecond, s.maxConcurrency, s.meterStreamMaxConcurrency]).toEqual([90, 20, 8, 16])
      expect(s.retry.rateLimitedRetries).toBe(5)
      expect(s.retry.unavailableRetries).toBe(3)
      expect(s.breaker).toEqual({ ...defaultSettings.breaker, window: Duration.seconds(60), cooldown: Duration.seconds(30) })
    }))

  it.effect("reads the STRIPE_* variables and rejects bad values", () =>
    Effect.gen(function* () {
      const s = yield* settingsConfig.pipe(
        withEnv({
          STRIPE_API_BASE: "http://127.0.0.1:12111",
          STRIPE_METER_EVENTS_API_BASE: "http://127.0.0.1:12112",
          STRIPE_API_TIMEOUT_SECONDS: "5",
          STRIPE_RATE_LIMIT_LIVE_PER_SECOND: "50",
          STRIPE_MAX_CONCURRENCY: "3",
          STRIPE_METER_STREAM_MAX_CONCURRENCY: "5",
          STRIPE_BREAKER_COOLDOWN_SECONDS: "10"
        })
      )
      expect([s.apiBase, s.meterEventsApiBase, s.rateLimitLivePerSecond, s.maxConcurrency, s.meterStreamMaxConcurrency]).toEqual([
        "http://127.0.0.1:12111",
        "http://127.0.0.1:12112",
        50,
        3,
        5
      ])
      expect(Duration.toSeconds(Duration.decode(s.breaker.cooldown))).toBe(10)
      const bad = yield* Effect.flip(settingsConfig.pipe(withEnv({ STRIPE_API_BASE: "ftp://nope" })))
      expect(String(bad)).toContain("STRIPE_API_BASE")
      const zero = yield* Effect.flip(settingsConfig.pipe(withEnv({ STRIPE_MAX_CONCURRENCY: "0" })))
      expect(String(zero)).toContain("STRIPE_MAX_CONCURRENCY")
      const zeroStream = yield* Effect.flip(settingsConfig.pipe(withEnv({ STRIPE_METER_STREAM_MAX_CONCURRENCY: "0" })))
      expect(String(zeroStream)).toContain("STRIPE_METER_STREAM_MAX_CONCURRENCY")
    }))

  it.live("StripeClient.layer built from the environment talks to the configured host", () =>
    Effect.gen(function* () {
      const emulator = yield* makeStripeEmulator({ apiKey: TEST_KEY, now: () => Date.now() })
      const layer = StripeClient.layer.pipe(
        Layer.provide(
          Layer.setConfigProvider(
            ConfigProvider.fromMap(
              new Map([
                ["STRIPE_API_BASE", emulator.url],
                ["STRIPE_METER_EVENTS_API_BASE", emulator.url]
              ])
            )
          )
        )
      )
      const account = yield* Effect.flatMap(StripeClient, (c) => c.retrieveAccount(refFor())).pipe(Effect.provide(layer))
      expect(account.id).toBe(emulator.accountId)
    }).pipe(Effect.scoped))
})

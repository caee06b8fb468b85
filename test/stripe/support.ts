/** Shared setup: a real emulator on loopback and the real client pointed at it. */
import { Effect, Redacted } from "effect"
import { makeStripeEmulator } from "../../src/stripe-emulator/index.js"
import { makeStripeClient, type StripeAccountRef } from "../../src/stripe/StripeClient.js"
import { fastRetrySettings } from "../../src/stripe/StripeRetry.js"
import { emulatorSettings, type StripeClientSettingsInput } from "../../src/stripe/StripeSettings.js"

export const TEST_KEY = "sk_test_51FlexpriceEmulatorKey0000SECRET4242"

export const refFor = (key: string = TEST_KEY, tenantKey = "tnt_test/env_test"): StripeAccountRef => ({
  tenantKey,
  apiKey: Redacted.make(key),
  livemode: false
})

/** Emulator on a free port (real wall clock) + client with fast retries and generous limits. */
export const setup = (input: StripeClientSettingsInput = {}) =>
  Effect.gen(function* () {
    // These suites measure the client's own pacing, retries and back-pressure at configured rates
    // above Stripe's test-mode limit (~25 r/s, docs.stripe.com/rate-limits), as a live key's higher
    // limits allow; the emulator's test-mode limit is lifted here, explicitly, so the 429s they see
    // are the ones they inject. The emulator's limiter is tested in test/stripe-emulator/faithful.test.ts.
    const emulator = yield* makeStripeEmulator({ apiKey: TEST_KEY, now: () => Date.now(), rateLimits: "off" })
    const client = yield* makeStripeClient(
      emulatorSettings(emulator.url, {
        rateLimitTestPerSecond: 10_000,
        meterStreamRateLimitPerSecond: 10_000,
        maxConcurrency: 16,
        timeout: "30 seconds",
        ...input,
        retry: { ...fastRetrySettings, ...input.retry }
      })
    )
    return { emulator, client, ref: refFor() }
  })

export const countOf = (counts: Readonly<Record<string, number>>, key: string): number => counts[key] ?? 0

/** Real-time sleep that ignores TestClock (for waiting on real sockets inside it.effect). */
export const realSleep = (ms: number) => Effect.promise(() => new Promise<void>((r) => setTimeout(r, ms)))

/**
 * Settings of the Stripe client, from environment variables (effect `Config`) or built explicitly
 * (tests, demo, benchmarks) with `makeSettings({...})`.
 */
import { Config, Duration } from "effect"
import { type CircuitBreakerSettings, defaultCircuitBreakerSettings } from "./CircuitBreaker.js"
import { defaultRetrySettings, type RetrySettings } from "./StripeRetry.js"
import { integerSetting } from "../config/Settings.js"

export interface StripeClientSettings {
  /** STRIPE_API_BASE, e.g. https://api.stripe.com or http://127.0.0.1:12111 */
  readonly apiBase: string
  /** STRIPE_METER_EVENTS_API_BASE, e.g. https://meter-events.stripe.com */
  readonly meterEventsApiBase: string
  /** STRIPE_API_TIMEOUT_SECONDS: per HTTP attempt. */
  readonly timeout: Duration.DurationInput
  /** STRIPE_RATE_LIMIT_LIVE_PER_SECOND / STRIPE_RATE_LIMIT_TEST_PER_SECOND: per tenant, API host. */
  readonly rateLimitLivePerSecond: number
  readonly rateLimitTestPerSecond: number
  /** STRIPE_METER_STREAM_RATE_LIMIT_PER_SECOND: per tenant, meter-events host (separate Stripe budget). */
  readonly meterStreamRateLimitPerSecond: number
  /** STRIPE_MAX_CONCURRENCY: concurrent HTTP requests per tenant, API host. */
  readonly maxConcurrency: number
  /**
   * STRIPE_METER_STREAM_MAX_CONCURRENCY: concurrent meter event stream requests per tenant. The
   * stream is another host with its own budget (10,000 requests/s in live mode: Stripe's API
   * reference for `POST /v2/billing/meter_event_stream` and the 2024-09-30.acacia changelog
   * "Adds Meter Event v2 API endpoints"), so its requests do not queue for the API host's permits.
   */
  readonly meterStreamMaxConcurrency: number
  /** Refresh the v2 session token this long before it expires (STRIPE_METER_SESSION_REFRESH_MARGIN_SECONDS). */
  readonly sessionRefreshMargin: Duration.DurationInput
  readonly breaker: CircuitBreakerSettings
  readonly retry: RetrySettings
}

export const defaultSettings: StripeClientSettings = {
  apiBase: "https://api.stripe.com",
  meterEventsApiBase: "https://meter-events.stripe.com",
  timeout: "30 seconds",
  rateLimitLivePerSecond: 90,
  // Stripe allows 100 operations/s in live mode and 25/s in test mode (sandbox), shared by the
  // whole account (https://docs.stripe.com/rate-limits, "Rate limiters"); keep headroom under
  // both for the dashboard and other clients of the same account.
  rateLimitTestPerSecond: 20,
  meterStreamRateLimitPerSecond: 1000,
  maxConcurrency: 8,
  // as many as the push keeps in flight (FLEXPRICE_SYNC_PUSH_CONCURRENCY's default)
  meterStreamMaxConcurrency: 16,
  sessionRefreshMargin: "60 seconds",
  breaker: defaultCircuitBreakerSettings,
  retry: defaultRetrySettings
}

export interface StripeClientSettingsInput
  extends Partial<Omit<StripeClientSettings, "breaker" | "retry">> {
  readonly breaker?: Partial<CircuitBreakerSettings>
  readonly retry?: Partial<RetrySettings>
}

export const makeSettings = (input: StripeClientSettingsInput = {}): StripeClientSettings => ({
  ...defaultSettings,
  ...stripUndefined(input),
  breaker: { ...defaultSettings.breaker, ...stripUndefined(input.breaker ?? {}) },
  retry: { ...defaultSettings.retry, ...stripUndefined(input.retry ?? {}) }
})

/** Settings pointing both hosts at one base URL (the emulator serves v1 and v2 on one port). */
export const emulatorSettings = (url: string, input: StripeClientSettingsInput = {}): StripeClientSettings =>
  makeSettings({ ...input, apiBase: url, meterEventsApiBase: url })

const stripUndefined = <T extends object>(o: T): Partial<T> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>

const positiveInt = (name: string, fallback: number) => integerSetting(name, { default: fallback, min: 1 })

const positiveNumber = (name: string, fallback: number) =>
  Config.number(name).pipe(
    Config.withDefault(fallback),
    Config.validate({ message: `${name} must be positive`, validation: (n) => n > 0 })
  )

const baseUrl = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.withDefault(fallback),
    Config.validate({
      message: `${name} must be an http(s) URL`,
      validation: (s) => {
        try {
          const u = new URL(s)
          return u.protocol === "http:" || u.protocol === "https:"
        } catch {
          return false
        }
      }
    })
  )

/** Reads every STRIPE_* client variable; unset ones take the defaults above. */
export const settingsConfig: Config.Config<StripeClientSettings> = Config.all({
  apiBase: baseUrl("STRIPE_API_BASE", defaultSettings.apiBase),
  meterEventsApiBase: baseUrl("STRIPE_METER_EVENTS_API_BASE", defaultSettings.meterEventsApiBase),
  timeoutSeconds: positiveNumber("STRIPE_API_TIMEOUT_SECONDS", 30),
  rateLimitLivePerSecond: positiveInt("STRIPE_RATE_LIMIT_LIVE_PER_SECOND", defaultSettings.rateLimitLivePerSecond),
  rateLimitTestPerSecond: positiveInt("STRIPE_RATE_LIMIT_TEST_PER_SECOND", defaultSettings.rateLimitTestPerSecond),
  meterStreamRateLimitPerSecond: positiveInt(
    "STRIPE_METER_STREAM_RATE_LIMIT_PER_SECOND",
    defaultSettings.meterStreamRateLimitPerSecond
  ),
  maxConcurrency: positiveInt("STRIPE_MAX_CONCURRENCY", defaultSettings.maxConcurrency),
  meterStreamMaxConcurrency: positiveInt("STRIPE_METER_STREAM_MAX_CONCURRENCY", defaultSettings.meterStreamMaxConcurrency),
  sessionRefreshMarginSeconds: positiveNumber("STRIPE_METER_SESSION_REFRESH_MARGIN_SECONDS", 60),
  breakerConsecutiveFailures: positiveInt(
    "STRIPE_BREAKER_CONSECUTIVE_FAILURES",
    defaultCircuitBreakerSettings.consecutiveFailures
  ),
  breakerFailureRatio: Config.number("STRIPE_BREAKER_FAILURE_RATIO").pipe(
    Config.withDefault(defaultCircuitBreakerSettings.failureRatio),
    Config.validate({ message: "STRIPE_BREAKER_FAILURE_RATIO must be in (0, 1]", validation: (n) => n > 0 && n <= 1 })
  ),
  breakerWindowSeconds: positiveNumber("STRIPE_BREAKER_WINDOW_SECONDS", 60),
  breakerMinimumCalls: positiveInt("STRIPE_BREAKER_MINIMUM_CALLS", defaultCircuitBreakerSettings.minimumCalls),
  breakerCooldownSeconds: positiveNumber("STRIPE_BREAKER_COOLDOWN_SECONDS", 30),
  retryRateLimitedBaseMillis: positiveInt("STRIPE_RETRY_RATE_LIMITED_BASE_MS", 500),
  retryUnavailableBaseMillis: positiveInt("STRIPE_RETRY_UNAVAILABLE_BASE_MS", 1000)
}).pipe(
  Config.map(
    (c): StripeClientSettings => ({
      apiBase: c.apiBase,
      meterEventsApiBase: c.meterEventsApiBase,
      timeout: Duration.seconds(c.timeoutSeconds),
      rateLimitLivePerSecond: c.rateLimitLivePerSecond,
      rateLimitTestPerSecond: c.rateLimitTestPerSecond,
      meterStreamRateLimitPerSecond: c.meterStreamRateLimitPerSecond,
      maxConcurrency: c.maxConcurrency,
      meterStreamMaxConcurrency: c.meterStreamMaxConcurrency,
      sessionRefreshMargin: Duration.seconds(c.sessionRefreshMarginSeconds),
      breaker: {
        consecutiveFailures: c.breakerConsecutiveFailures,
        failureRatio: c.breakerFailureRatio,
        window: Duration.seconds(c.breakerWindowSeconds),
        minimumCalls: c.breakerMinimumCalls,
        cooldown: Duration.seconds(c.breakerCooldownSeconds)
      },
      retry: {
        ...defaultRetrySettings,
        rateLimitedBase: Duration.millis(c.retryRateLimitedBaseMillis),
        unavailableBase: Duration.millis(c.retryUnavailableBaseMillis)
      }
    })
  )
)

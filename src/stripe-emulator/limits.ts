/**
 * Stripe's rate limits, as documented:
 * - https://docs.stripe.com/rate-limits: "live mode 100 operations per second, sandbox/test mode
 *   25 operations per second" for most endpoints; a request over the limit answers 429
 *   (`rate_limit`).
 * - https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits:
 *   v1 meter events 1,000 calls per second in live mode; the v2 meter event stream 10,000
 *   requests per second in live mode; in test mode meter events count against the shared test
 *   mode limit; v1 allows one concurrent call per customer per meter.
 *
 * Windows are one second of real time (not the emulator clock): a rate limit bounds throughput,
 * and under TestClock the emulated calendar stands still.
 */
import { performance } from "node:perf_hooks"

export interface RateLimitConfig {
  /** Requests per second a test-mode key gets, shared by every endpoint. */
  readonly testMode: number
  /** Live mode: `POST /v1/billing/meter_events` per second. */
  readonly liveV1MeterEvents: number
  /** Live mode: `POST /v2/billing/meter_event_stream` requests per second. */
  readonly liveStream: number
  /** Live mode: every other endpoint, per second. */
  readonly liveOther: number
}

export const STRIPE_RATE_LIMITS: RateLimitConfig = {
  testMode: 25,
  liveV1MeterEvents: 1_000,
  liveStream: 10_000,
  liveOther: 100
}

type LimitClass = "test" | "v1_meter_events" | "stream" | "other"

export class RateLimiter {
  private window = -1
  private readonly used = new Map<LimitClass, number>()
  limited = 0

  constructor(
    private readonly livemode: boolean,
    private config: RateLimitConfig | undefined
  ) {}

  /** `undefined` lifts every limit (benchmarks, the demo when it says so). */
  set(config: RateLimitConfig | undefined): void {
    this.config = config
    this.used.clear()
  }

  current(): RateLimitConfig | undefined {
    return this.config
  }

  /** Counts the request; false when it is over its class's limit for the current second. */
  admit(method: string, path: string): boolean {
    const c = this.config
    if (c === undefined) return true
    const second = Math.floor(performance.now() / 1000)
    if (second !== this.window) {
      this.window = second
      this.used.clear()
    }
    const cls: LimitClass = !this.livemode
      ? "test"
      : method === "POST" && path === "/v1/billing/meter_events"
        ? "v1_meter_events"
        : method === "POST" && path === "/v2/billing/meter_event_stream"
          ? "stream"
          : "other"
    const limit =
      cls === "test" ? c.testMode : cls === "v1_meter_events" ? c.liveV1MeterEvents : cls === "stream" ? c.liveStream : c.liveOther
    const n = (this.used.get(cls) ?? 0) + 1
    this.used.set(cls, n)
    if (n > limit) {
      this.limited++
      return false
    }
    return true
  }
}

/** Decodes `POST /_emulator/rate_limits` (`{"off": true}` or any of the snake_case limits). */
export const rateLimitsFromJson = (body: unknown): RateLimitConfig | undefined => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("expected a JSON object")
  const b = body as Record<string, unknown>
  if (b.off === true) return undefined
  const known = new Set(["off", "test_mode", "live_v1_meter_events", "live_stream", "live_other"])
  for (const k of Object.keys(b)) if (!known.has(k)) throw new Error(`unknown rate limit field: ${k}`)
  const pick = (k: string, d: number): number => {
    const v = b[k]
    if (v === undefined) return d
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer`)
    return v
  }
  return {
    testMode: pick("test_mode", STRIPE_RATE_LIMITS.testMode),
    liveV1MeterEvents: pick("live_v1_meter_events", STRIPE_RATE_LIMITS.liveV1MeterEvents),
    liveStream: pick("live_stream", STRIPE_RATE_LIMITS.liveStream),
    liveOther: pick("live_other", STRIPE_RATE_LIMITS.liveOther)
  }
}

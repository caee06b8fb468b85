/**
 * Fault injection. Random faults draw from a seeded PRNG (mulberry32) so a test that sets
 * `seed` sees the same sequence every run; `failNext` is fully deterministic.
 */
import { prng } from "../domain/Prng.js"

export type FaultKind = "rate_limit" | "server_error" | "drop" | "outage"

export interface FaultConfig {
  /** Fraction (0..1) of requests answered 429. */
  readonly rateLimitFraction?: number
  /** Fraction (0..1) of requests answered 5xx (status `serverErrorStatus`, default 500). */
  readonly serverErrorFraction?: number
  readonly serverErrorStatus?: 500 | 502 | 503 | 504
  /**
   * `Stripe-Should-Retry` on injected 5xx. Default: false for a 500 saved under an
   * Idempotency-Key (a retry with that key replays it), true for an unsaved 5xx.
   */
  readonly serverErrorShouldRetry?: boolean
  /** Added latency before each request is handled. */
  readonly latencyMs?: number
  /** Fraction (0..1) of requests whose socket is destroyed without an answer. */
  readonly dropFraction?: number
  /** Every request answers 503 until this instant (unix ms, emulator clock). */
  readonly outageUntilMs?: number
  /** Convenience: outage for this many ms from now (emulator clock). */
  readonly outageForMs?: number
  /** `Retry-After` seconds sent with 429s. */
  readonly retryAfterSeconds?: number
  /** Expire every meter event session issued so far (applied once, when set). */
  readonly expireSessions?: boolean
  /** PRNG seed for the fractions (default 1). */
  readonly seed?: number
  /** Fail exactly the next `count` matching requests with `kind` (before any fraction applies). */
  readonly failNext?: { readonly count: number; readonly kind: Exclude<FaultKind, "outage">; readonly status?: number }
  /** Only requests whose path starts with one of these prefixes are affected (default: all API paths). */
  readonly paths?: ReadonlyArray<string>
}

export type FaultDecision =
  | { readonly _tag: "none" }
  | { readonly _tag: "rate_limit" }
  | { readonly _tag: "server_error"; readonly status: number }
  | { readonly _tag: "outage" }
  | { readonly _tag: "drop" }


const fraction = (n: unknown, name: string): number | undefined => {
  if (n === undefined || n === null) return undefined
  if (typeof n !== "number" || !(n >= 0 && n <= 1)) throw new Error(`${name} must be a number in [0, 1]`)
  return n
}

const nonNegative = (n: unknown, name: string): number | undefined => {
  if (n === undefined || n === null) return undefined
  if (typeof n !== "number" || !(n >= 0) || !Number.isFinite(n)) throw new Error(`${name} must be a non-negative number`)
  return n
}

/** Decodes the snake_case JSON body of `POST /_emulator/faults`; throws with a message on bad input. */
export const faultConfigFromJson = (body: unknown): FaultConfig => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("expected a JSON object")
  const b = body as Record<string, unknown>
  const known = new Set([
    "rate_limit_fraction",
    "server_error_fraction",
    "server_error_status",
    "server_error_should_retry",
    "latency_ms",
    "drop_fraction",
    "outage_until",
    "outage_seconds",
    "outage_ms",
    "retry_after_seconds",
    "expire_sessions",
    "seed",
    "fail_next",
    "paths"
  ])
  for (const k of Object.keys(b)) if (!known.has(k)) throw new Error(`unknown fault field: ${k}`)
  let outageUntilMs: number | undefined
  if (b.outage_until !== undefined) {
    if (typeof b.outage_until === "number") outageUntilMs = b.outage_until * 1000
    else if (typeof b.outage_until === "string" && !Number.isNaN(Date.parse(b.outage_until))) {
      outageUntilMs = Date.parse(b.outage_until)
    } else throw new Error("outage_until must be unix seconds or an RFC 3339 string")
  }
  const outageSeconds = nonNegative(b.outage_seconds, "outage_seconds")
  const outageMs = nonNegative(b.outage_ms, "outage_ms")
  const status = b.server_error_status
  if (status !== undefined && status !== 500 && status !== 502 && status !== 503 && status !== 504) {
    throw new Error("server_error_status must be 500, 502, 503 or 504")
  }
  let failNext: FaultConfig["failNext"]
  if (b.fail_next !== undefined) {
    const f = b.fail_next as Record<string, unknown>
    const kind = f?.kind
    if (typeof f !== "object" || f === null || typeof f.count !== "number" || f.count < 0) {
      throw new Error("fail_next must be {count, kind}")
    }
    if (kind !== "rate_limit" && kind !== "server_error" && kind !== "drop") {
      throw new Error("fail_next.kind must be rate_limit, server_error or drop")
    }
    failNext = { count: f.count, kind, ...(typeof f.status === "number" ? { status: f.status } : {}) }
  }
  if (b.paths !== undefined && (!Array.isArray(b.paths) || b.paths.some((p) => typeof p !== "string"))) {
    throw new Error("paths must be an array of strings")
  }
  if (b.expire_sessions !== undefined && typeof b.expire_sessions !== "boolean") {
    throw new Error("expire_sessions must be a boolean")
  }
  if (b.seed !== undefined && typeof b.seed !== "number") throw new Error("seed must be a number")
  const out: Record<string, unknown> = {
    rateLimitFraction: fraction(b.rate_limit_fraction, "rate_limit_fraction"),
    serverErrorFraction: fraction(b.server_error_fraction, "server_error_fraction"),
    serverErrorStatus: status,
    serverErrorShouldRetry: typeof b.server_error_should_retry === "boolean" ? b.server_error_should_retry : undefined,
    latencyMs: nonNegative(b.latency_ms, "latency_ms"),
    dropFraction: fraction(b.drop_fraction, "drop_fraction"),
    outageUntilMs,
    outageForMs: outageMs ?? (outageSeconds !== undefined ? outageSeconds * 1000 : undefined),
    retryAfterSeconds: nonNegative(b.retry_after_seconds, "retry_after_seconds"),
    expireSessions: b.expire_sessions,
    seed: b.seed,
    failNext,
    paths: b.paths
  }
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k]
  return out as FaultConfig
}

/** Mutable fault state: the active config, the PRNG, the fail-next counter. */
export class Faults {
  private config: FaultConfig = {}
  private random: () => number = prng(1)
  private failNextLeft = 0
  injected = 0

  /** Replaces the active config. `outageForMs` is resolved against `nowMs`. */
  set(config: FaultConfig, nowMs: number): FaultConfig {
    const resolved: FaultConfig = {
      ...config,
      ...(config.outageForMs !== undefined ? { outageUntilMs: nowMs + config.outageForMs } : {})
    }
    this.config = resolved
    this.random = prng(config.seed ?? 1)
    this.failNextLeft = config.failNext?.count ?? 0
    return resolved
  }

  reset(): void {
    this.config = {}
    this.random = prng(1)
    this.failNextLeft = 0
  }

  current(): FaultConfig & { readonly failNextRemaining: number } {
    return { ...this.config, failNextRemaining: this.failNextLeft }
  }

  latencyMs(path: string): number {
    return this.applies(path) ? (this.config.latencyMs ?? 0) : 0
  }

  /** The fault's explicit `Stripe-Should-Retry` for 5xx, if it sets one. */
  serverErrorShouldRetry(): boolean | undefined {
    return this.config.serverErrorShouldRetry
  }

  retryAfterSeconds(): number | undefined {
    return this.config.retryAfterSeconds
  }

  private applies(path: string): boolean {
    const paths = this.config.paths
    return paths === undefined || paths.length === 0 || paths.some((p) => path.startsWith(p))
  }

  decide(path: string, nowMs: number): FaultDecision {
    if (!this.applies(path)) return { _tag: "none" }
    const c = this.config
    let d: FaultDecision = { _tag: "none" }
    if (c.outageUntilMs !== undefined && nowMs < c.outageUntilMs) {
      d = { _tag: "outage" }
    } else if (this.failNextLeft > 0 && c.failNext) {
      this.failNextLeft--
      const f = c.failNext
      d =
        f.kind === "rate_limit"
          ? { _tag: "rate_limit" }
          : f.kind === "drop"
            ? { _tag: "drop" }
            : { _tag: "server_error", status: f.status ?? c.serverErrorStatus ?? 500 }
    } else {
      // Draw once per configured fraction, always, so a seeded run's sequence does not shift
      // with the outcome of earlier draws.
      const drop = c.dropFraction !== undefined && this.random() < c.dropFraction
      const limited = c.rateLimitFraction !== undefined && this.random() < c.rateLimitFraction
      const failed = c.serverErrorFraction !== undefined && this.random() < c.serverErrorFraction
      if (drop) d = { _tag: "drop" }
      else if (limited) d = { _tag: "rate_limit" }
      else if (failed) d = { _tag: "server_error", status: c.serverErrorStatus ?? 500 }
    }
    if (d._tag !== "none") this.injected++
    return d
  }
}

/**
 * Throttling of invalid API keys per client address. Each key check costs a database read and
 * answers whether a guess was right, so an address that sent FLEXPRICE_AUTH_FAILURE_LIMIT invalid
 * keys within FLEXPRICE_AUTH_FAILURE_WINDOW_SECONDS gets 429 for any key until its window ends
 * (valid keys included: answering them would keep the guessing oracle open). Requests without a
 * key are not counted (nothing is checked).
 *
 * Memory is bounded: at most FLEXPRICE_AUTH_THROTTLE_MAX_CLIENTS addresses are tracked; when full,
 * expired windows go first, then the oldest. Per process: replicas each keep their own table, so
 * across N replicas an address gets up to N × limit tries per window.
 *
 * The client address is the socket peer, or the first untrusted X-Forwarded-For hop when the peer
 * is in FLEXPRICE_TRUSTED_PROXIES (as for webhooks).
 */
import { Config, ConfigError, Context, Effect, Either, Layer } from "effect"
import { parseCidrs, type CidrList } from "../webhooks/WebhookConfig.js"
import { integerSetting } from "../config/Settings.js"

export interface ThrottleSettings {
  /** Invalid keys per window that an address may send; 0 turns throttling off. */
  readonly limit: number
  readonly windowMs: number
  readonly maxClients: number
}

interface Entry {
  readonly windowStart: number
  failures: number
}

/** The table itself; times are epoch milliseconds from the caller's Clock. */
export class FailureThrottle {
  // insertion order is window-start order: an entry whose window restarts is deleted and re-added
  private readonly entries = new Map<string, Entry>()
  constructor(readonly settings: ThrottleSettings) {}

  get size(): number {
    return this.entries.size
  }

  private live(ip: string, now: number): Entry | undefined {
    const e = this.entries.get(ip)
    if (e === undefined) return undefined
    if (now - e.windowStart >= this.settings.windowMs) {
      this.entries.delete(ip)
      return undefined
    }
    return e
  }

  /** Milliseconds until this address may send a key again; 0 = now. */
  blockedFor(ip: string, now: number): number {
    if (this.settings.limit <= 0) return 0
    const e = this.live(ip, now)
    return e !== undefined && e.failures >= this.settings.limit ? e.windowStart + this.settings.windowMs - now : 0
  }

  recordFailure(ip: string, now: number): void {
    if (this.settings.limit <= 0) return
    const e = this.live(ip, now)
    if (e !== undefined) {
      e.failures++
      return
    }
    for (const [key, old] of this.entries) {
      if (this.entries.size < this.settings.maxClients && now - old.windowStart < this.settings.windowMs) break
      this.entries.delete(key)
    }
    this.entries.set(ip, { windowStart: now, failures: 1 })
  }
}

const positiveInt = (name: string, fallback: number, min: number) => integerSetting(name, { default: fallback, min })

export interface AuthThrottleSettings extends ThrottleSettings {
  readonly trustedProxies: CidrList
}

export const AuthThrottleConfig: Config.Config<AuthThrottleSettings> = Config.all({
  limit: positiveInt("FLEXPRICE_AUTH_FAILURE_LIMIT", 30, 0),
  windowSeconds: positiveInt("FLEXPRICE_AUTH_FAILURE_WINDOW_SECONDS", 60, 1),
  maxClients: positiveInt("FLEXPRICE_AUTH_THROTTLE_MAX_CLIENTS", 10_000, 1),
  trustedProxies: Config.string("FLEXPRICE_TRUSTED_PROXIES").pipe(
    Config.withDefault(""),
    Config.mapOrFail((s) =>
      Either.mapLeft(parseCidrs(s), (why) => ConfigError.InvalidData(["FLEXPRICE_TRUSTED_PROXIES"], `expected comma-separated CIDRs: ${why}`))
    )
  )
}).pipe(Config.map(({ windowSeconds, ...rest }) => ({ ...rest, windowMs: windowSeconds * 1000 })))

export class AuthThrottle extends Context.Tag("flexprice/AuthThrottle")<
  AuthThrottle,
  { readonly table: FailureThrottle; readonly trustedProxies: CidrList }
>() {
  static readonly layer = Layer.effect(
    AuthThrottle,
    Effect.map(AuthThrottleConfig, (s) => ({ table: new FailureThrottle(s), trustedProxies: s.trustedProxies }))
  )
}

/**
 * Repeated bad API keys from one client address are throttled (issue #15 item 8): after
 * FLEXPRICE_AUTH_FAILURE_LIMIT invalid keys within the window, that address gets 429
 * `too_many_auth_failures` with Retry-After, whatever key it sends, until the window ends; other
 * addresses are unaffected; requests without a key do not count. The table of addresses is
 * bounded (FLEXPRICE_AUTH_THROTTLE_MAX_CLIENTS) and forgets expired windows.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { FailureThrottle } from "../../src/http/AuthThrottle.js"
import * as TestApp from "../support/TestApp.js"
import { raw, TestTenant } from "../support/TestApp.js"

/** A request as `apiKey` from client address `ip`: sent raw, the typed client has no X-Forwarded-For. */
const from = (ip: string, apiKey: string) => raw("GET", "/v1/customers", { apiKey, headers: { "x-forwarded-for": ip } })

layer(
  TestApp.layer({
    env: {
      FLEXPRICE_AUTH_FAILURE_LIMIT: "5",
      FLEXPRICE_AUTH_FAILURE_WINDOW_SECONDS: "60",
      // the test client is the proxy: X-Forwarded-For names the client address
      FLEXPRICE_TRUSTED_PROXIES: "127.0.0.1/32,::1/128"
    }
  }),
  { excludeTestServices: true }
)("throttling of invalid API keys over HTTP", (it) => {
  it.effect("answers 429 with Retry-After after the limit, for any key from that address only", () =>
    Effect.gen(function* () {
      const { apiKey } = yield* TestTenant
      for (let i = 0; i < 5; i++) {
        const res = yield* from("203.0.113.7", `fp_wrong_${i}`)
        expect([res.status, res.error?.code]).toEqual([401, "invalid_api_key"])
      }
      const blocked = yield* from("203.0.113.7", "fp_wrong_6")
      expect(blocked.status).toBe(429)
      const retryAfter = Number(blocked.headers["retry-after"])
      expect(Number.isInteger(retryAfter)).toBe(true)
      expect(retryAfter).toBeGreaterThanOrEqual(1)
      expect(retryAfter).toBeLessThanOrEqual(60)
      expect(blocked.error?.code).toBe("too_many_auth_failures")
      expect(blocked.error?.details).toEqual({ retry_after_seconds: retryAfter })
      // blocked addresses get no answer about any key, valid ones included
      const valid = yield* from("203.0.113.7", apiKey)
      expect([valid.status, valid.error?.code]).toEqual([429, "too_many_auth_failures"])
      // other addresses are not affected
      expect((yield* from("203.0.113.8", apiKey)).status).toBe(200)
      expect((yield* from("203.0.113.8", "fp_wrong")).status).toBe(401)
    })
  )

  it.effect("does not count requests without a key", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 10; i++) {
        const res = yield* from("198.51.100.9", "")
        expect([res.status, res.error?.code]).toEqual([401, "missing_api_key"])
      }
      expect((yield* from("198.51.100.9", (yield* TestTenant).apiKey)).status).toBe(200)
    })
  )
})

describe("FailureThrottle", () => {
  const settings = { limit: 3, windowMs: 60_000, maxClients: 100 }

  it("blocks from the limit until the window's end, then forgets", () => {
    const t = new FailureThrottle(settings)
    for (let i = 0; i < 3; i++) {
      expect(t.blockedFor("a", 1_000 + i)).toBe(0)
      t.recordFailure("a", 1_000 + i)
    }
    expect(t.blockedFor("a", 2_000)).toBe(59_000)
    expect(t.blockedFor("b", 2_000)).toBe(0)
    expect(t.blockedFor("a", 60_999)).toBe(1)
    expect(t.blockedFor("a", 61_000)).toBe(0)
    expect(t.size).toBe(0)
  })

  it("holds at most maxClients addresses, dropping expired ones first, then the oldest", () => {
    const t = new FailureThrottle(settings)
    for (let i = 0; i < 10_000; i++) t.recordFailure(`10.0.${i >> 8}.${i & 255}`, i)
    expect(t.size).toBe(100)
    // the newest addresses are kept
    for (let i = 0; i < 3; i++) t.recordFailure("10.0.39.15", 10_000)
    expect(t.blockedFor("10.0.39.15", 10_001)).toBeGreaterThan(0)
    // after the window, new addresses replace expired ones
    t.recordFailure("192.0.2.1", 200_000)
    expect(t.size).toBe(1)
  })

  it("is off with a limit of 0", () => {
    const t = new FailureThrottle({ ...settings, limit: 0 })
    for (let i = 0; i < 10; i++) t.recordFailure("a", i)
    expect(t.blockedFor("a", 10)).toBe(0)
    expect(t.size).toBe(0)
  })
})

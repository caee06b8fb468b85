import { describe, expect, it } from "vitest"
import fc from "fast-check"
import * as Decimal from "../../src/domain/Decimal.js"
import { amountToSend, truncateSignificant } from "../../src/sync/Carry.js"
import { batchIdentifier } from "../../src/sync/Identifier.js"
import * as W from "../../src/sync/Windows.js"

const SIZES = [15, 30, 60, 120, 360, 720, 1440] as const
const HOUR = 3_600_000

describe("window arithmetic", () => {
  it("aligns to UTC and is due only at end + grace", () => {
    const at = new Date("2026-03-10T13:37:12.345Z")
    expect(W.alignDown(at, 60).toISOString()).toBe("2026-03-10T13:00:00.000Z")
    expect(W.alignDown(at, 15).toISOString()).toBe("2026-03-10T13:30:00.000Z")
    expect(W.alignDown(at, 1440).toISOString()).toBe("2026-03-10T00:00:00.000Z")
    const w = W.windowAt(new Date("2026-03-10T12:00:00Z"), 60)
    expect(W.isDue(w, 5, new Date("2026-03-10T13:04:59.999Z"))).toBe(false)
    expect(W.isDue(w, 5, new Date("2026-03-10T13:05:00Z"))).toBe(true)
    expect(W.dueThrough(new Date("2026-03-10T13:04:59Z"), 60, 5).toISOString()).toBe("2026-03-10T12:00:00.000Z")
    expect(W.dueThrough(new Date("2026-03-10T13:05:00Z"), 60, 5).toISOString()).toBe("2026-03-10T13:00:00.000Z")
    expect(() => W.alignDown(at, 7)).toThrow()
  })

  it("dueThrough separates due from not-due windows exactly", () => {
    fc.assert(fc.property(fc.constantFrom(...SIZES), fc.integer({ min: 0, max: 600 }), fc.integer({ min: 1_600_000_000_000, max: 1_900_000_000_000 }), (minutes, grace, now) => {
      const bound = W.dueThrough(now, minutes, grace)
      expect(W.isAligned(bound, minutes)).toBe(true)
      const size = minutes * 60_000
      const lastDue = W.windowAt(new Date(bound.getTime() - size), minutes)
      const firstNotDue = W.windowAt(bound, minutes)
      expect(W.isDue(lastDue, grace, now)).toBe(true)
      expect(W.isDue(firstNotDue, grace, now)).toBe(false)
      // never an open window
      expect(lastDue.end.getTime()).toBeLessThanOrEqual(now)
    }))
  })

  it("windowStarts covers [from, to) with aligned, contiguous windows", () => {
    fc.assert(fc.property(fc.constantFrom(...SIZES), fc.integer({ min: 1_600_000_000_000, max: 1_900_000_000_000 }), fc.integer({ min: 0, max: 5 * 24 * HOUR }), (minutes, from, span) => {
      const starts = W.windowStarts(new Date(from), new Date(from + span), minutes)
      const size = minutes * 60_000
      for (let i = 0; i < starts.length; i++) {
        expect(W.isAligned(starts[i]!, minutes)).toBe(true)
        if (i > 0) expect(starts[i]!.getTime() - starts[i - 1]!.getTime()).toBe(size)
      }
      if (span > 0) {
        expect(starts[0]!.getTime()).toBeLessThanOrEqual(from)
        expect(starts[starts.length - 1]!.getTime() + size).toBeGreaterThanOrEqual(from + span)
      }
    }))
  })

  it("35-day horizons", () => {
    const now = Date.parse("2026-03-10T13:00:00Z")
    expect(W.withinCreateHorizon(new Date(now - 34 * W.DAY_MS), now)).toBe(true)
    expect(W.withinCreateHorizon(new Date(now - 35 * W.DAY_MS + 30 * 60_000), now)).toBe(false)
    expect(W.withinSendHorizon(new Date(now - 35 * W.DAY_MS + 30 * 60_000), now)).toBe(true)
    expect(W.withinSendHorizon(new Date(now - 35 * W.DAY_MS), now)).toBe(false)
  })
})

describe("batch identifier", () => {
  const key = {
    tenantId: "tnt_a",
    environmentId: "env_b",
    customerId: "cust_c",
    meterId: "mtr_d",
    eventType: "api_call",
    windowStart: new Date("2026-03-10T12:00:00Z"),
    sequence: 1
  }
  it("is deterministic, short and Stripe-safe", () => {
    const id = batchIdentifier(key)
    expect(id).toBe(batchIdentifier({ ...key }))
    expect(id.length).toBeLessThanOrEqual(100)
    expect(id).toMatch(/^fpsb1_[0-9a-f]{48}$/)
  })
  it("differs when any component differs", () => {
    const id = batchIdentifier(key)
    const variants = [
      { ...key, tenantId: "tnt_x" },
      { ...key, environmentId: "env_x" },
      { ...key, customerId: "cust_x" },
      { ...key, meterId: "mtr_x" },
      { ...key, eventType: "x" },
      { ...key, windowStart: new Date("2026-03-10T13:00:00Z") },
      { ...key, sequence: 2 },
      // field boundaries cannot be shifted
      { ...key, tenantId: "tnt_a\",\"env_b", environmentId: "" }
    ]
    const ids = new Set(variants.map(batchIdentifier))
    expect(ids.size).toBe(variants.length)
    expect(ids.has(id)).toBe(false)
  })
})

describe("carry", () => {
  it("truncates to 15 significant digits toward zero", () => {
    expect(truncateSignificant("123456789012345.678")).toBe("123456789012345")
    expect(truncateSignificant("1.23456789012345678")).toBe("1.23456789012345")
    expect(truncateSignificant("0.000123456789012345678")).toBe("0.000123456789012345")
    // Stripe counts every digit of the integer part: 10^15 and above cannot be sent as is
    expect(truncateSignificant("1234567890123456789")).toBe("999999999999999")
    expect(truncateSignificant("42.5")).toBe("42.5")
  })

  it("never emits 16 significant digits (counterexample [[\"1000000000000000\",\"0\"],false])", () => {
    const r = amountToSend("1000000000000000", "0", false)
    expect(Decimal.significantDigits(r.sent)).toBeLessThanOrEqual(15)
    expect(r).toEqual({ sent: "999999999999999", outstanding: "1" })
  })

  it("sends whole units and carries the fraction", () => {
    let out = "0"
    const sent: Array<string> = []
    for (const q of ["0.4", "0.4", "0.4", "2.9"]) {
      const r = amountToSend(out, q, true)
      sent.push(r.sent)
      out = r.outstanding
    }
    expect(sent).toEqual(["0", "0", "1", "3"])
    expect(out).toBe("0.1")
  })

  const qty = fc
    .tuple(fc.bigInt({ min: 0n, max: 10n ** 9n }), fc.integer({ min: 0, max: 12 }))
    .map(([n, scale]) => Decimal.normalize(scale === 0 ? n.toString() : `${n / 10n ** BigInt(scale)}.${(n % 10n ** BigInt(scale)).toString().padStart(scale, "0")}`))

  it("Σ sent never exceeds Σ aggregated, and whole units never drift by a unit", () => {
    fc.assert(fc.property(fc.array(qty, { minLength: 1, maxLength: 200 }), fc.boolean(), (quantities, wholeUnits) => {
      let outstanding = "0"
      const sent: Array<string> = []
      for (const q of quantities) {
        const r = amountToSend(outstanding, q, wholeUnits)
        expect(Decimal.isNegative(r.sent)).toBe(false)
        expect(Decimal.significantDigits(r.sent)).toBeLessThanOrEqual(15)
        if (wholeUnits) expect(Decimal.splitWhole(r.sent).fraction).toBe("0")
        sent.push(r.sent)
        outstanding = r.outstanding
        const drift = Decimal.sub(Decimal.sum(quantities.slice(0, sent.length)), Decimal.sum(sent))
        expect(Decimal.equals(drift, outstanding)).toBe(true)
        expect(Decimal.isNegative(drift)).toBe(false)
        if (wholeUnits) expect(Decimal.compare(drift, "1")).toBe(-1)
        else expect(Decimal.isZero(drift)).toBe(true) // values here stay within 15 digits
      }
    }))
  })
})

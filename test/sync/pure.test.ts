import { describe, expect, it } from "vitest"
import fc from "fast-check"
import { amountToSend, truncateSignificant } from "../../src/sync/Carry.js"
import { exact, quantity, runs } from "../support/arbitraries.js"
import * as O from "../support/oracle.js"
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
    expect(() => W.alignDown(at, 7)).toThrow("window size must divide a day, got 7 minutes")
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
    expect(O.stripeDigits(r.sent)).toBeLessThanOrEqual(15)
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

  // Quantities of one batch are ≥ 0 (aggregations of billable usage); outstanding may start anywhere
  // a ledger can hold, including negative (never produced today, but amountToSend must not send it).
  const qty = quantity({ min: 0n })

  it("Σ sent never exceeds Σ aggregated, every send fits Stripe, and whole units never drift by a unit (oracle)", () => {
    fc.assert(
      fc.property(fc.array(qty, { minLength: 1, maxLength: 60 }), fc.boolean(), (quantities, wholeUnits) => {
        let outstanding = "0"
        let sentTotal = O.parse("0")
        let aggregated = O.parse("0")
        for (const q of quantities) {
          const r = amountToSend(outstanding, q, wholeUnits)
          const owedBefore = O.add(outstanding, q)
          expect(O.compare(r.sent, "0")).toBeGreaterThanOrEqual(0)
          expect(O.stripeDigits(r.sent)).toBeLessThanOrEqual(15)
          if (wholeUnits) expect(O.scaleOf(r.sent)).toBe(0)
          expect(O.compare(r.sent, owedBefore)).toBeLessThanOrEqual(0)
          sentTotal = O.add(sentTotal, r.sent)
          aggregated = O.add(aggregated, q)
          outstanding = r.outstanding
          // nothing lost: outstanding is exactly Σ aggregated − Σ sent
          expect(O.format(outstanding)).toBe(O.format(O.sub(aggregated, sentTotal)))
          // the most that 15 digits allow is sent
          const ideal = wholeUnits ? O.floor(owedBefore) : owedBefore
          expect(r.sent).toBe(O.compare(ideal, "0") <= 0 ? "0" : O.truncateDigits(ideal, 15))
          if (wholeUnits && O.compare(ideal, "1e15") < 0) expect(O.compare(outstanding, "1")).toBe(-1)
        }
      }),
      runs(300)
    )
  })

  it("a single batch of 10^15 or more is sent over later batches, never lost", () => {
    fc.assert(
      fc.property(exact({ min: 10n ** 15n, max: 10n ** 20n, maxScale: 0 }), fc.integer({ min: 0, max: 3 }), fc.boolean(), (big, later, wholeUnits) => {
        const q = O.format(big)
        let r = amountToSend("0", q, wholeUnits)
        expect(r.sent).toBe("999999999999999")
        let sent = O.parse(r.sent)
        for (let i = 0; i < later; i++) {
          r = amountToSend(r.outstanding, "0", wholeUnits)
          sent = O.add(sent, r.sent)
        }
        expect(O.format(O.add(sent, r.outstanding))).toBe(q)
      })
    )
  })

  it("sends a negative total as a correction (whole units toward −∞) and nothing when nothing is owed", () => {
    fc.assert(
      fc.property(quantity({ max: 0n }), fc.boolean(), (owed, wholeUnits) => {
        const r = amountToSend(owed, "0", wholeUnits)
        const total = O.format(owed)
        const want = O.compare(total, "0") === 0 ? "0" : O.truncateDigits(wholeUnits ? O.floor(total) : total, 15)
        expect(r).toEqual({ sent: want, outstanding: O.format(O.sub(total, want)) })
        // below the 15-digit cap, Stripe never ends above the exact total for whole units
        if (wholeUnits && O.compare(total, "-999999999999999") >= 0) expect(O.compare(r.sent, total)).toBeLessThanOrEqual(0)
      })
    )
    expect(amountToSend("0", "0", true)).toEqual({ sent: "0", outstanding: "0" })
    expect(amountToSend("1", "-1.4", true)).toEqual({ sent: "-1", outstanding: "0.6" })
    expect(amountToSend("0", "-2.5", false)).toEqual({ sent: "-2.5", outstanding: "0" })
    // a carried fraction is paid by the next quantities like any other
    expect(amountToSend("-2.5", "3", true)).toEqual({ sent: "0", outstanding: "0.5" })
    expect(amountToSend("-2.5", "4", true)).toEqual({ sent: "1", outstanding: "0.5" })
  })

  it("truncateSignificant keeps the largest value toward zero with at most `digits` digits (oracle)", () => {
    fc.assert(
      fc.property(exact(), fc.integer({ min: 1, max: 18 }), (v, digits) => {
        const t = truncateSignificant(O.format(v), digits)
        expect(t).toBe(O.truncateDigits(v, digits))
        expect(O.stripeDigits(t)).toBeLessThanOrEqual(digits)
      }),
      runs(500)
    )
    expect(truncateSignificant("-1234567890123456789")).toBe("-999999999999999")
    expect(truncateSignificant("-1.23456789012345678")).toBe("-1.23456789012345")
    expect(truncateSignificant("999999999999999.9")).toBe("999999999999999")
    expect(truncateSignificant("1000000000000000")).toBe("999999999999999")
    expect(truncateSignificant("12.5", 2)).toBe("12")
    expect(truncateSignificant("125", 2)).toBe("99")
  })
})

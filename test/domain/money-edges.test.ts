/**
 * Exact boundaries of the money modules that the properties only brush: the 35-day horizons to
 * the millisecond, window sizes that must be refused, the last window of a range, literals with
 * surrounding whitespace, the schema's error text, and identifier stability. Expected values are
 * written from the rules (Stripe's 35-day limit, the identifier's documented layout), not computed
 * by the code under test.
 */
import { createHash } from "node:crypto"
import { Either, ParseResult, Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Decimal from "../../src/domain/Decimal.js"
import { amountToSend, STRIPE_MAX_SIGNIFICANT_DIGITS, truncateSignificant } from "../../src/sync/Carry.js"
import { batchIdentifier, IDENTIFIER_PREFIX } from "../../src/sync/Identifier.js"
import * as W from "../../src/sync/Windows.js"
import { runs } from "../support/arbitraries.js"
import * as O from "../support/oracle.js"

const MIN = 60_000
const DAY = 24 * 60 * MIN

describe("window edges", () => {
  const now = Date.parse("2026-03-10T13:17:00Z")

  it("create horizon: start ≥ now − 35 d + 60 min, to the millisecond", () => {
    const bound = now - 35 * DAY + 60 * MIN
    expect(W.withinCreateHorizon(new Date(bound), now)).toBe(true)
    expect(W.withinCreateHorizon(new Date(bound - 1), now)).toBe(false)
    expect(W.withinCreateHorizon(new Date(bound), new Date(now))).toBe(true)
    expect(W.withinCreateHorizon(new Date(bound - 1), new Date(now))).toBe(false)
  })

  it("send horizon: start ≥ now − 35 d + 5 min, to the millisecond", () => {
    const bound = now - 35 * DAY + 5 * MIN
    expect(W.withinSendHorizon(new Date(bound), now)).toBe(true)
    expect(W.withinSendHorizon(new Date(bound - 1), now)).toBe(false)
    expect(W.withinSendHorizon(new Date(bound), new Date(now))).toBe(true)
    expect(W.withinSendHorizon(new Date(bound - 1), new Date(now))).toBe(false)
    expect([W.STRIPE_MAX_AGE_MS, W.CREATE_MARGIN_MS, W.SEND_MARGIN_MS, W.DAY_MS, W.MINUTE_MS]).toEqual([35 * DAY, 60 * MIN, 5 * MIN, DAY, MIN])
  })

  it("refuses window sizes that are not a positive whole divisor of a day", () => {
    const at = new Date(now)
    for (const bad of [0, -60, -1440, 1.5, 7, 1441, 2880, Number.NaN]) expect(() => W.alignDown(at, bad), String(bad)).toThrow(/divide a day/)
    for (const good of [1, 2, 3, 15, 60, 1440]) expect(W.alignDown(at, good).getTime() % (good * MIN)).toBe(0)
    expect(() => W.windowAt(at, 7)).toThrow(/divide a day/)
    expect(() => W.isAligned(at, 7)).toThrow(/divide a day/)
    expect(() => W.windowStarts(at, at, 7)).toThrow(/divide a day/)
  })

  it("windowStarts and windowsOverlapping: exactly the windows meeting [from, to)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(15, 60, 1440),
        fc.integer({ min: 1_700_000_000_000, max: 1_800_000_000_000 }),
        fc.integer({ min: 0, max: 3 * DAY }),
        fc.boolean(),
        (minutes, from0, span, alignTo) => {
          const size = minutes * MIN
          const from = alignTo ? from0 - (from0 % size) : from0
          const to = alignTo ? from + Math.ceil(span / size) * size : from + span
          const starts = W.windowStarts(new Date(from), new Date(to), minutes).map((d) => d.getTime())
          // oracle: every aligned start s with s + size > from and s < to
          const want: Array<number> = []
          for (let s = from - (((from % size) + size) % size); s < to; s += size) want.push(s)
          expect(starts).toEqual(want)
          const ws = W.windowsOverlapping(new Date(from), new Date(to), minutes)
          expect(ws.map((w) => [w.start.getTime(), w.end.getTime()])).toEqual(want.map((s) => [s, s + size]))
        }
      ),
      runs(200)
    )
    expect(W.windowStarts(new Date(0), new Date(0), 60)).toEqual([])
  })

  it("isDue takes numbers and dates alike; due exactly at end + grace", () => {
    const w = W.windowAt(new Date("2026-03-10T12:00:00Z"), 60)
    const due = Date.parse("2026-03-10T13:05:00Z")
    expect([W.isDue(w, 5, due), W.isDue(w, 5, due - 1), W.isDue(w, 5, new Date(due)), W.isDue(w, 5, new Date(due - 1))]).toEqual([true, false, true, false])
    expect(W.dueThrough(new Date(due), 60, 5).getTime()).toBe(W.dueThrough(due, 60, 5).getTime())
    expect(W.alignDown(due, 60).getTime()).toBe(Date.parse("2026-03-10T13:00:00Z"))
    expect(W.isAligned(new Date("2026-03-10T13:00:00.001Z"), 60)).toBe(false)
  })
})

describe("due instants", () => {
  it("lastDueAtOrBefore / nextDueAfter: the due instants k·size + grace around now (oracle by search)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 15, 60, 1440),
        fc.integer({ min: 0, max: 180 }),
        fc.integer({ min: 1_700_000_000_000, max: 1_800_000_000_000 }),
        fc.boolean(),
        (minutes, graceMinutes, now0, onDue) => {
          const size = minutes * MIN
          const grace = graceMinutes * MIN
          // oracle: walk the due instants k·size + grace to the last one at or before now
          const now = onDue ? Math.floor((now0 - grace) / size) * size + grace : now0
          let last = Math.floor(now / size) * size + grace
          while (last > now) last -= size
          while (last + size <= now) last += size
          expect(W.lastDueAtOrBefore(now, minutes, graceMinutes)).toBe(last)
          expect(W.nextDueAfter(now, minutes, graceMinutes)).toBe(last + size)
          if (onDue) expect(last).toBe(now)
        }
      ),
      runs(200)
    )
    const t = Date.parse("2026-03-10T13:05:00Z")
    expect(W.lastDueAtOrBefore(t, 60, 5)).toBe(t)
    expect(W.lastDueAtOrBefore(t - 1, 60, 5)).toBe(t - 60 * MIN)
    expect(W.nextDueAfter(t, 60, 5)).toBe(t + 60 * MIN)
    expect(W.nextDueAfter(t - 1, 60, 5)).toBe(t)
    expect(W.isAligned(new Date("2026-03-10T13:00:00Z"), 60)).toBe(true)
    expect(W.isAligned(new Date("2026-03-10T13:15:00Z"), 15)).toBe(true)
    expect(W.isAligned(new Date("2026-03-10T13:15:00Z"), 60)).toBe(false)
    expect(() => W.nextDueAfter(t, 7, 5)).toThrow(/divide a day/)
  })

  it("windowAt ends one size later; dueThrough takes numbers and dates alike", () => {
    const start = new Date("2026-03-10T12:00:00Z")
    expect(W.windowAt(start, 15)).toEqual({ start, end: new Date("2026-03-10T12:15:00Z") })
    expect(W.windowAt(start, 1440).end.toISOString()).toBe("2026-03-11T12:00:00.000Z")
    const now = Date.parse("2026-03-10T13:04:59.999Z")
    expect(W.dueThrough(now, 60, 5).toISOString()).toBe("2026-03-10T12:00:00.000Z")
    expect(W.dueThrough(now + 1, 60, 5).toISOString()).toBe("2026-03-10T13:00:00.000Z")
    expect(W.dueThrough(new Date(now + 1), 60, 5).toISOString()).toBe("2026-03-10T13:00:00.000Z")
  })
})

describe("decimal edges", () => {
  it("accepts surrounding whitespace and reads the value inside", () => {
    for (const [text, want] of [[" 1.50 ", "1.5"], ["\t-2e3\n", "-2000"], ["  +.5", "0.5"]] as const) {
      expect(Decimal.isDecimal(text)).toBe(true)
      expect(Decimal.normalize(text)).toBe(want)
      expect(Decimal.add(text, "0")).toBe(want)
      expect(Decimal.compare(text, want)).toBe(0)
    }
  })

  it("the schemas name what they expected and what they got", () => {
    for (const schema of [Decimal.DecimalString, Decimal.DecimalFromString]) {
      const r = Schema.decodeUnknownEither(schema)("12abc")
      expect(Either.isLeft(r)).toBe(true)
      if (Either.isLeft(r)) expect(ParseResult.TreeFormatter.formatErrorSync(r.left)).toContain('expected a decimal number, got "12abc"')
    }
  })

  it("literal bounds on the text: 64 digits and exponents within ±64 pass, one more is a range error", () => {
    const nines = (n: number) => "9".repeat(n)
    const ok = [nines(64), `-${nines(64)}`, `1.${"0".repeat(62)}1`, `.${nines(64)}`, "1e64", "1E+64", "1e-64", "-1e0064", "7e000"]
    for (const text of ok) {
      expect(Decimal.checkLiteral(text), text).toBe("ok")
      expect(Decimal.normalize(text), text).toBe(O.format(text))
    }
    const range = [nines(65), `1.${"0".repeat(63)}1`, `.${nines(65)}`, "1e65", "1e-65", "1e0065", "1e1000", `1e${nines(400)}`]
    for (const text of range) {
      expect(Decimal.checkLiteral(text), text).toBe("range")
      expect(() => Decimal.normalize(text), text).toThrow(Decimal.DecimalRangeError)
    }
    expect(() => Decimal.add("1", nines(65))).toThrow("decimal out of range: at most 64 digits and an exponent within ±64")
    expect([Decimal.MAX_LITERAL_DIGITS, Decimal.MAX_EXPONENT]).toEqual([64, 64])
    for (const text of ["abc", "1e", ".", "", "1e+-2", "--1"]) expect(Decimal.checkLiteral(text), text).toBe("syntax")
    expect(Decimal.checkLiteral(" 1.5 ")).toBe("ok")
    // the refusal quotes at most 100 characters of the input
    expect(() => Decimal.normalize("x".repeat(300))).toThrow(`not a decimal: ${JSON.stringify("x".repeat(100))}`)
    expect(() => Decimal.normalize("x".repeat(300))).not.toThrow(Decimal.DecimalRangeError)
  })

  it("exponent spellings of every case and sign", () => {
    expect(["1E2", "1e+2", "100e0", "10000e-2", "0.01E4", "-1E2"].map(Decimal.normalize)).toEqual(["100", "100", "100", "100", "100", "-100"])
    expect(Decimal.normalize("5.")).toBe("5")
    expect(Decimal.normalize("-0.0e-5")).toBe("0")
    expect(Decimal.scaleOf("-0.000000000001")).toBe(12)
    expect(Decimal.scaleOf("100")).toBe(0)
  })
})

describe("carry edges", () => {
  it("15 digits exactly pass unchanged; one more is cut", () => {
    expect(STRIPE_MAX_SIGNIFICANT_DIGITS).toBe(15)
    expect(truncateSignificant("999999999999999")).toBe("999999999999999")
    expect(truncateSignificant("0.000999999999999999")).toBe("0.000999999999999999")
    expect(truncateSignificant("0.0009999999999999999")).toBe("0.000999999999999999")
    expect(truncateSignificant("-0.0009999999999999999")).toBe("-0.000999999999999999")
    expect(truncateSignificant("100000000000000.01")).toBe("100000000000000")
    // only the fraction's leading zeros are free, not a zero inside it
    expect(truncateSignificant("0.1023", 2)).toBe("0.1")
    expect(truncateSignificant("0.001023", 2)).toBe("0.001")
  })

  it("outstanding + quantity is what is owed, in both modes (oracle)", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 14n), max: 10n ** 14n }), fc.bigInt({ min: 0n, max: 10n ** 14n }), fc.boolean(), (o, q, whole) => {
        const outstanding = O.format({ unscaled: o, scale: 3 })
        const quantity = O.format({ unscaled: q, scale: 2 })
        const owed = O.add(outstanding, quantity)
        const r = amountToSend(outstanding, quantity, whole)
        // negative totals are corrections, sent like any amount (whole units: floor, toward −∞)
        const want = O.compare(owed, "0") === 0 ? "0" : O.truncateDigits(whole ? O.floor(owed) : owed, 15)
        expect(r.sent).toBe(want)
        expect(r.outstanding).toBe(O.format(O.sub(owed, want)))
      }),
      runs(300)
    )
  })
})

describe("identifier layout", () => {
  it("is the prefix and the first 48 hex of SHA-256 over the JSON array of the key", () => {
    const key = {
      tenantId: "t",
      environmentId: "e",
      customerId: "c",
      meterId: "m",
      eventType: "x",
      windowStart: new Date("2026-03-10T12:00:00Z"),
      sequence: 3
    }
    const want = createHash("sha256").update('["t","e","c","m","x","2026-03-10T12:00:00.000Z",3]').digest("hex").slice(0, 48)
    expect(IDENTIFIER_PREFIX).toBe("fpsb1_")
    expect(batchIdentifier(key)).toBe(`fpsb1_${want}`)
  })
})

/**
 * Every exported operation of src/domain/Decimal.ts against the independent BigInt oracle
 * (test/support/oracle.ts): signs, zero, ±10^20, 12 decimals, exponent and padded literals,
 * round trips, and the literals the parser must refuse.
 */
import { BigDecimal, Either, Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Decimal from "../../src/domain/Decimal.js"
import { exact, HOSTILE, hostile, literalOf, quantity, runs } from "../support/arbitraries.js"
import * as O from "../support/oracle.js"

const RUNS = runs(400)
/** A value and one of its literal spellings. */
const spelled = exact().chain((v) => literalOf(v).map((text) => ({ v, text })))

describe("Decimal against the BigInt oracle", () => {
  it("oracle sanity: known values", () => {
    expect(O.format(O.add("0.1", "0.2"))).toBe("0.3")
    expect(O.format("-0.000")).toBe("0")
    expect(O.format("1.50e3")).toBe("1500")
    expect(O.format(O.sub("1", "1.000000000001"))).toBe("-0.000000000001")
    expect(O.stripeDigits("1000000000000000")).toBe(16)
    expect(O.stripeDigits("0.00012")).toBe(2)
    expect(O.format(O.floor("-2.5"))).toBe("-3")
  })

  it("isDecimal accepts every accepted spelling and normalize yields the canonical form", () => {
    fc.assert(
      fc.property(spelled, ({ v, text }) => {
        expect(Decimal.isDecimal(text)).toBe(true)
        expect(Decimal.normalize(text)).toBe(O.format(v))
        expect(O.format(O.parse(text))).toBe(O.format(v))
      }),
      RUNS
    )
  })

  it("refuses hostile literals (isDecimal false, normalize throws, schema fails)", () => {
    fc.assert(
      fc.property(hostile, (text) => {
        expect(O.tryParse(text)).toBeUndefined()
        expect(Decimal.isDecimal(text)).toBe(false)
        expect(() => Decimal.normalize(text)).toThrow(/not a decimal/)
        expect(Either.isLeft(Schema.decodeUnknownEither(Decimal.DecimalFromString)(text))).toBe(true)
        expect(Either.isLeft(Schema.decodeUnknownEither(Decimal.DecimalString)(text))).toBe(true)
      })
    )
  })

  it("refuses every hostile literal, each checked (not sampled), with the syntax error", () => {
    for (const text of HOSTILE) {
      expect(O.tryParse(text), text).toBeUndefined()
      expect(Decimal.isDecimal(text), text).toBe(false)
      expect(Decimal.checkLiteral(text), text).toBe("syntax")
      expect(() => Decimal.normalize(text), text).toThrow(`not a decimal: ${JSON.stringify(text)}`)
      expect(() => Decimal.add(text, "1"), text).toThrow(/not a decimal/)
      expect(() => Decimal.compare("1", text), text).toThrow(/not a decimal/)
    }
  })

  it("round trip: normalize is idempotent and canonical text parses back to the same value", () => {
    fc.assert(
      fc.property(spelled, ({ v, text }) => {
        const n = Decimal.normalize(text)
        expect(Decimal.normalize(n)).toBe(n)
        expect(O.compare(n, v)).toBe(0)
        expect(n).toMatch(/^(0|-?[1-9]\d*(\.\d*[1-9])?|-?0\.\d*[1-9])$/)
      }),
      RUNS
    )
  })

  it("add, sub and sum equal the oracle's, whatever the spelling", () => {
    fc.assert(
      fc.property(spelled, spelled, fc.array(spelled, { maxLength: 20 }), (a, b, many) => {
        expect(Decimal.add(a.text, b.text)).toBe(O.format(O.add(a.v, b.v)))
        expect(Decimal.sub(a.text, b.text)).toBe(O.format(O.sub(a.v, b.v)))
        expect(Decimal.sub(a.text, a.text)).toBe("0")
        expect(Decimal.add(a.text, O.format(O.neg(a.v)))).toBe("0")
        expect(Decimal.sum(many.map((m) => m.text))).toBe(O.format(O.sum(many.map((m) => m.v))))
      }),
      RUNS
    )
    expect(Decimal.sum([])).toBe("0")
  })

  it("zero is neither positive nor negative, in every spelling (a mutation survivor: `> 0n` → `>= 0n`)", () => {
    for (const z of ["0", "-0", "+0.000", "0e5", ".0"]) {
      expect([Decimal.isZero(z), Decimal.isPositive(z), Decimal.isNegative(z)], z).toEqual([true, false, false])
    }
  })

  it("compare, equals and the sign predicates equal the oracle's", () => {
    const near = exact().chain((v) => fc.constantFrom(v, O.add(v, "0.000000000001"), O.sub(v, "1"), O.neg(v)).map((w) => [v, w] as const))
    fc.assert(
      fc.property(fc.oneof(fc.tuple(exact(), exact()), near), spelled, ([a, b], s) => {
        const [ta, tb] = [O.format(a), O.format(b)]
        expect(Decimal.compare(ta, tb)).toBe(O.compare(a, b))
        expect(Decimal.equals(ta, tb)).toBe(O.compare(a, b) === 0)
        const sign = O.compare(s.v, "0")
        expect(Decimal.isZero(s.text)).toBe(sign === 0)
        expect(Decimal.isNegative(s.text)).toBe(sign < 0)
        expect(Decimal.isPositive(s.text)).toBe(sign > 0)
        expect(Decimal.equals(s.text, O.format(s.v))).toBe(true)
      }),
      RUNS
    )
  })

  it("splitWhole is floor and a non-negative fraction below one, also for negatives", () => {
    fc.assert(
      fc.property(spelled, ({ v, text }) => {
        const { whole, fraction } = Decimal.splitWhole(text)
        expect(whole).toBe(O.format(O.floor(v)))
        expect(fraction).toBe(O.format(O.sub(v, O.floor(v))))
        expect(O.compare(fraction, "0")).toBeGreaterThanOrEqual(0)
        expect(O.compare(fraction, "1")).toBe(-1)
      }),
      RUNS
    )
    expect(Decimal.splitWhole("-2.5")).toEqual({ whole: "-3", fraction: "0.5" })
    expect(Decimal.splitWhole("-3")).toEqual({ whole: "-3", fraction: "0" })
    expect(Decimal.splitWhole("-0.000000000001")).toEqual({ whole: "-1", fraction: "0.999999999999" })
    expect(Decimal.splitWhole("2.5")).toEqual({ whole: "2", fraction: "0.5" })
  })

  it("significantDigits counts as Stripe does and scaleOf is the canonical scale", () => {
    fc.assert(
      fc.property(spelled, ({ v, text }) => {
        expect(Decimal.significantDigits(text)).toBe(O.stripeDigits(v))
        expect(Decimal.scaleOf(text)).toBe(O.scaleOf(v))
      }),
      RUNS
    )
    expect(Decimal.significantDigits("1000000000000000")).toBe(16)
    expect(Decimal.significantDigits("999999999999999")).toBe(15)
    expect(Decimal.significantDigits("-0.000000000001")).toBe(1)
    expect(Decimal.significantDigits("0")).toBe(1)
  })

  it("DecimalFromString decodes any accepted spelling to the canonical form, DecimalString keeps it", () => {
    fc.assert(
      fc.property(spelled, ({ v, text }) => {
        expect(Schema.decodeUnknownSync(Decimal.DecimalFromString)(text)).toBe(O.format(v))
        expect(Schema.encodeSync(Decimal.DecimalFromString)(Decimal.DecimalString.make(O.format(v)))).toBe(O.format(v))
        expect(Schema.decodeUnknownSync(Decimal.DecimalString)(text)).toBe(text)
      }),
      RUNS
    )
    expect(Decimal.MAX_SCALE).toBe(12)
  })

  it("parse reads the exact value as a BigDecimal; format writes the canonical form of any BigDecimal", () => {
    fc.assert(
      fc.property(spelled, ({ v, text }) => {
        const d = Decimal.parse(text)
        expect(O.format(`${d.value}e${-d.scale}`)).toBe(O.format(v))
        expect(Decimal.format(d)).toBe(O.format(v))
      }),
      RUNS
    )
    // any scale, also negative (an exponent literal's) and beyond BigDecimal.format's plain range
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }), fc.integer({ min: -70, max: 140 }), (u, s) => {
        expect(Decimal.format(BigDecimal.make(u, s))).toBe(O.format(`${u}e${-s}`))
      }),
      RUNS
    )
    const cases: ReadonlyArray<readonly [bigint, number, string]> = [
      [0n, 0, "0"], [0n, -5, "0"], [0n, 7, "0"], [5n, 0, "5"], [-5n, 0, "-5"], [-5n, 1, "-0.5"], [5n, 3, "0.005"],
      [1200n, -2, "120000"], [-1200n, 2, "-12"], [1200n, 3, "1.2"], [123n, 17, "0.00000000000000123"], [-1n, -3, "-1000"]
    ]
    for (const [u, s, want] of cases) expect(Decimal.format(BigDecimal.make(u, s)), `${u}e${-s}`).toBe(want)
    expect(() => Decimal.parse("1x")).toThrow('not a decimal: "1x"')
    expect(() => Decimal.parse("1e65")).toThrow(Decimal.DecimalRangeError)
  })

  it("classifies long near-literals in linear time (a digit run then a letter took seconds with the earlier regex)", () => {
    const n = 100_000
    const timed = <A>(f: () => A): A => {
      const t = performance.now()
      const a = f()
      expect(performance.now() - t).toBeLessThan(1000)
      return a
    }
    for (const text of ["1".repeat(n) + "x", `.${"1".repeat(n)}x`, `1.${"1".repeat(n)}x`, `1e${"0".repeat(n)}x`, `1e-${"0".repeat(n)}.`]) {
      expect(timed(() => Decimal.checkLiteral(text))).toBe("syntax")
      expect(timed(() => Decimal.isDecimal(text))).toBe(false)
    }
    expect(timed(() => Decimal.checkLiteral("1".repeat(n)))).toBe("range")
    expect(timed(() => Decimal.checkLiteral(`1e${"9".repeat(n)}`))).toBe("range")
    // an exponent's leading zeros carry no value, however many
    expect(timed(() => Decimal.normalize(`1e${"0".repeat(n)}1`))).toBe("10")
    expect(timed(() => Decimal.normalize(`-2e-${"0".repeat(n)}3`))).toBe("-0.002")
  })

  it("canonical quantities of the whole range survive normalize unchanged", () => {
    fc.assert(fc.property(quantity(), (q) => {
      expect(Decimal.normalize(q)).toBe(q)
    }), RUNS)
  })
})

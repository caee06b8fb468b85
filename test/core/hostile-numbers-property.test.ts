/**
 * Property: every number literal is either refused (beyond the digit or exponent bound) or
 * accepted with exactly its value. The oracle is plain BigInt arithmetic on the literal's parts.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Decimal from "../../src/domain/Decimal.js"
import { parseJson } from "../../src/domain/Json.js"
import { validateEvent } from "../../src/events/EventIngestor.js"

interface Literal {
  readonly text: string
  readonly negative: boolean
  readonly intDigits: string
  readonly fracDigits: string
  readonly exponent: bigint
}

const digits = (max: number) => fc.string({ unit: fc.constantFrom(..."0123456789"), minLength: 0, maxLength: max })

const exponents = fc.oneof(
  fc.bigInt({ min: -70n, max: 70n }),
  fc.bigInt({ min: -1_000_000_000n, max: 1_000_000_000n }),
  fc.constantFrom(-60000n, 999_999_999n, -65n, 65n, 64n, -64n)
)

/** JSON-shaped literals (no leading zeros in the integer part) with hostile sizes. */
const literals: fc.Arbitrary<Literal> = fc
  .record({
    negative: fc.boolean(),
    lead: fc.constantFrom(..."123456789"),
    rest: digits(80),
    zero: fc.boolean(),
    frac: fc.option(fc.string({ unit: fc.constantFrom(..."0123456789"), minLength: 1, maxLength: 80 }), { nil: undefined }),
    exponent: fc.option(exponents, { nil: undefined }),
    expZeros: fc.nat(3),
    e: fc.constantFrom("e", "E"),
    expPlus: fc.boolean()
  })
  .map(({ negative, lead, rest, zero, frac, exponent, expZeros, e, expPlus }) => {
    const intDigits = zero ? "0" : lead + rest
    let text = `${negative ? "-" : ""}${intDigits}${frac !== undefined ? "." + frac : ""}`
    if (exponent !== undefined) {
      const abs = exponent < 0n ? -exponent : exponent
      text += `${e}${exponent < 0n ? "-" : expPlus ? "+" : ""}${"0".repeat(expZeros)}${abs}`
    }
    return { text, negative, intDigits, fracDigits: frac ?? "", exponent: exponent ?? 0n }
  })

const inRange = (l: Literal) =>
  l.intDigits.length + l.fracDigits.length <= 64 && l.exponent <= 64n && l.exponent >= -64n

/** Exact value of the canonical output as (unscaled, scale). */
const partsOf = (canonical: string): [bigint, bigint] => {
  const [ip, fp = ""] = canonical.split(".")
  return [BigInt(ip!.replace("-", "") + fp) * (canonical.startsWith("-") ? -1n : 1n), BigInt(fp.length)]
}

describe("number literal bounds", () => {
  it("refuses exactly the literals beyond the bounds and normalises the others to their exact value", () => {
    fc.assert(
      fc.property(literals, (l) => {
        if (!inRange(l)) {
          expect(Decimal.checkLiteral(l.text)).toBe("range")
          expect(() => Decimal.normalize(l.text)).toThrow(Decimal.DecimalRangeError)
          return
        }
        expect(Decimal.checkLiteral(l.text)).toBe("ok")
        const out = Decimal.normalize(l.text)
        expect(out).toMatch(/^(0|-?(0|[1-9]\d*)(\.\d*[1-9])?)$/)
        // literal value = M × 10^(exponent − fracLen); output = U × 10^(−S): compare cross-multiplied
        const m = BigInt(l.intDigits + l.fracDigits) * (l.negative ? -1n : 1n)
        const litScale = BigInt(l.fracDigits.length) - l.exponent
        const [u, s] = partsOf(out)
        const shift = litScale - s
        if (shift >= 0n) expect(m).toBe(u * 10n ** shift)
        else expect(m * 10n ** -shift).toBe(u)
      }),
      { numRuns: 2000 }
    )
  })

  it("rejects an event per literal beyond the bounds, accepts it otherwise", () => {
    const now = new Date("2026-01-01T00:00:00Z")
    fc.assert(
      fc.property(literals, (l) => {
        const raw = parseJson(`{"event_name":"x","external_customer_id":"c","properties":{"q":${l.text}}}`)
        const v = validateEvent(raw, 0, now)
        if (inRange(l)) expect(v._tag).toBe("Valid")
        else expect(v._tag === "Rejected" && v.rejection.code).toBe("number_out_of_range")
      }),
      { numRuns: 1000 }
    )
  })

  it("handles the named hostile cases", () => {
    expect(Decimal.normalize("-0")).toBe("0")
    expect(Decimal.normalize("-0.0e-64")).toBe("0")
    for (const s of ["1e999999999", "1e-60000", "1e-65", "1e0000000000000000065", "-1E+99999999999999999999"])
      expect(Decimal.checkLiteral(s), s).toBe("range")
    expect(Decimal.normalize("1e0000000000000000064")).toBe("1" + "0".repeat(64))
    expect(Decimal.checkLiteral("abc")).toBe("syntax")
  })
})

/**
 * fast-check generators that reach the edges of the quantity domain: unscaled values from −10^20
 * to 10^20 with 0–12 decimals (the numeric(38,12) column's scale), written in the literal forms the
 * product accepts (sign, leading/trailing zeros, exponent), and literals it must refuse.
 */
import fc from "fast-check"
import * as O from "./oracle.js"

export const LIMIT = 10n ** 20n

/** An exact value: unscaled in [−10^20, 10^20], scale 0–12, biased toward 0, ±1 and the bounds. */
export const exact = (opts: { readonly min?: bigint; readonly max?: bigint; readonly maxScale?: number } = {}): fc.Arbitrary<O.Exact> => {
  const min = opts.min ?? -LIMIT
  const max = opts.max ?? LIMIT
  const edges = [0n, 1n, -1n, min, max, 10n ** 15n, 10n ** 15n - 1n, 10n ** 12n].filter((e) => e >= min && e <= max)
  return fc.record({
    unscaled: fc.oneof({ weight: 4, arbitrary: fc.bigInt({ min, max }) }, { weight: 1, arbitrary: fc.constantFrom(...edges) }),
    scale: fc.integer({ min: 0, max: opts.maxScale ?? 12 })
  })
}

/** Canonical text of an `exact` value. */
export const quantity = (opts?: Parameters<typeof exact>[0]): fc.Arbitrary<string> => exact(opts).map(O.format)

/** The same value written in one of the accepted non-canonical forms. */
export const literalOf = (v: O.Exact): fc.Arbitrary<string> =>
  fc
    .record({
      plus: fc.boolean(),
      leading: fc.integer({ min: 0, max: 3 }),
      trailing: fc.integer({ min: 0, max: 3 }),
      shift: fc.integer({ min: -30, max: 30 }),
      form: fc.constantFrom("plain", "exponent", "EXPONENT", "padded")
    })
    .map(({ plus, leading, trailing, shift, form }) => {
      const sign = v.unscaled < 0n ? "-" : plus ? "+" : ""
      const abs = v.unscaled < 0n ? -v.unscaled : v.unscaled
      if (form === "padded") {
        // leading zeros on the integer part, trailing zeros on the fraction, maybe a bare point
        const text = O.plain(abs * 10n ** BigInt(trailing), v.scale + trailing)
        const body = "0".repeat(leading) + (text.includes(".") ? text : `${text}.`)
        return sign + body
      }
      // mantissa = abs × 10^−(scale+shift), exponent = shift
      const mScale = v.scale + shift
      const mantissa = mScale >= 0 ? O.plain(abs, mScale) : (abs * 10n ** BigInt(-mScale)).toString()
      return `${sign}${mantissa}${form === "exponent" ? "e" : "E"}${shift >= 0 ? (plus ? "+" : "") : ""}${shift}`
    })

/** Strings the decimal parser must refuse. */
export const HOSTILE: ReadonlyArray<string> = [
  "", " ", "-", "+", ".", "-.", "e5", "1e", "1e+", "--1", "+-1", "1.2.3", "1..2", "1,5", "1_000", "0x10", "0b1", "NaN",
  "Infinity", "-Infinity", "1e1.5", "١٢", "1 2", "12abc", "abc", "[1]", "{}", "null", "true", "x1", "1x", "e", "1e5e5", "1.e"
]
export const hostile = fc.constantFrom(...HOSTILE)

/**
 * fast-check run counts: `n` normally; capped by FC_MAX_RUNS where set (the mutation run, which
 * re-runs these tests for every mutant, sets it in vitest.mutation.config.ts).
 */
export const runs = (n: number): { readonly numRuns: number } => {
  const cap = Number(process.env["FC_MAX_RUNS"] ?? "")
  return { numRuns: Number.isInteger(cap) && cap > 0 ? Math.min(n, cap) : n }
}

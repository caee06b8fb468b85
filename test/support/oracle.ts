/**
 * Test-only exact decimals on plain BigInt: the independent oracle that expected values in tests
 * come from. Written without looking at src/domain/Decimal.ts and sharing no code with it, so a
 * bug there cannot hide in an expectation computed the same way.
 *
 * A value is (unscaled, scale) = unscaled × 10^−scale with scale ≥ 0. Parsing accepts what the
 * product documents as a decimal literal (sign, digits, optional point, optional exponent,
 * surrounding whitespace); `format` writes the canonical form (no exponent, no leading zeros, no
 * trailing fractional zeros, "0" for zero, "-" only for negatives).
 */

export interface Exact {
  readonly unscaled: bigint
  readonly scale: number
}

const LITERAL = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/

/** The exact value of a decimal literal, or undefined when it is not one. */
export const tryParse = (text: string): Exact | undefined => {
  const m = LITERAL.exec(text.trim())
  if (m === null) return undefined
  const [, sign, whole = "", frac = "", exp] = m
  if (whole.length + frac.length === 0) return undefined
  let unscaled = BigInt(`${whole}${frac}` || "0")
  if (sign === "-") unscaled = -unscaled
  let scale = frac.length - (exp === undefined ? 0 : Number(exp))
  if (scale < 0) {
    unscaled *= 10n ** BigInt(-scale)
    scale = 0
  }
  return { unscaled, scale }
}

export const parse = (text: string): Exact => {
  const v = tryParse(text)
  if (v === undefined) throw new Error(`oracle: not a decimal literal: ${JSON.stringify(text)}`)
  return v
}

const toScale = (v: Exact, scale: number): bigint => v.unscaled * 10n ** BigInt(scale - v.scale)

/** Same value, no trailing zero digits in the unscaled part beyond the point. */
export const reduce = (v: Exact): Exact => {
  let { unscaled, scale } = v
  while (scale > 0 && unscaled % 10n === 0n) {
    unscaled /= 10n
    scale--
  }
  return { unscaled, scale }
}

const lift = (a: Exact, b: Exact, f: (x: bigint, y: bigint) => bigint): Exact => {
  const scale = Math.max(a.scale, b.scale)
  return reduce({ unscaled: f(toScale(a, scale), toScale(b, scale)), scale })
}

const val = (v: Exact | string): Exact => (typeof v === "string" ? parse(v) : v)

export const add = (a: Exact | string, b: Exact | string): Exact => lift(val(a), val(b), (x, y) => x + y)
export const sub = (a: Exact | string, b: Exact | string): Exact => lift(val(a), val(b), (x, y) => x - y)
export const neg = (a: Exact | string): Exact => {
  const v = val(a)
  return { unscaled: -v.unscaled, scale: v.scale }
}
export const sum = (values: Iterable<Exact | string>): Exact => {
  let acc: Exact = { unscaled: 0n, scale: 0 }
  for (const v of values) acc = add(acc, v)
  return acc
}

export const compare = (a: Exact | string, b: Exact | string): -1 | 0 | 1 => {
  const d = sub(a, b).unscaled
  return d === 0n ? 0 : d < 0n ? -1 : 1
}

/** Largest integer ≤ a (toward negative infinity). */
export const floor = (a: Exact | string): Exact => {
  const v = val(a)
  const unit = 10n ** BigInt(v.scale)
  const r = ((v.unscaled % unit) + unit) % unit // non-negative remainder
  return { unscaled: (v.unscaled - r) / unit, scale: 0 }
}

/** Canonical text. */
export const format = (a: Exact | string): string => {
  const { unscaled, scale } = reduce(val(a))
  if (unscaled === 0n) return "0"
  const sign = unscaled < 0n ? "-" : ""
  const digits = (unscaled < 0n ? -unscaled : unscaled).toString()
  if (scale === 0) return sign + digits
  const padded = digits.length <= scale ? "0".repeat(scale - digits.length + 1) + digits : digits
  const cut = padded.length - scale
  return `${sign}${padded.slice(0, cut)}.${padded.slice(cut)}`
}

/**
 * Digits Stripe counts in a meter event value: from the first non-zero digit to the last digit of
 * the canonical form; every digit of an integer part counts (10^15 has 16). Zero has one.
 */
export const stripeDigits = (a: Exact | string): number => {
  const { unscaled } = reduce(val(a))
  if (unscaled === 0n) return 1
  return (unscaled < 0n ? -unscaled : unscaled).toString().length
}

/** Digits after the point in canonical form. */
export const scaleOf = (a: Exact | string): number => reduce(val(a)).scale

/** Text of unscaled × 10^−scale written plainly (no reduction: keeps trailing zeros). */
export const plain = (unscaled: bigint, scale: number): string => {
  if (scale === 0) return unscaled.toString()
  const sign = unscaled < 0n ? "-" : ""
  const digits = (unscaled < 0n ? -unscaled : unscaled).toString().padStart(scale + 1, "0")
  return `${sign}${digits.slice(0, digits.length - scale)}.${digits.slice(digits.length - scale)}`
}

/**
 * The value of largest magnitude toward zero with at most `digits` Stripe digits: the trailing
 * digits beyond `digits` dropped; 10^digits − 1 (with the sign) when the integer part is longer.
 */
export const truncateDigits = (a: Exact | string, digits: number): string => {
  const r = reduce(val(a))
  const negative = r.unscaled < 0n
  const u = negative ? -r.unscaled : r.unscaled
  const drop = u.toString().length - digits
  if (drop <= 0) return format(r)
  const scale = r.scale - drop
  const abs: Exact = scale < 0 ? { unscaled: 10n ** BigInt(digits) - 1n, scale: 0 } : { unscaled: u / 10n ** BigInt(drop), scale }
  return format(negative ? neg(abs) : abs)
}

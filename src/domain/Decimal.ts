/**
 * Exact decimal arithmetic for quantities. Values travel as canonical decimal strings
 * ("12.5", "-0.001", "0"); arithmetic is `effect/BigDecimal` (a BigInt with a scale), so no JS
 * number ever touches a billable quantity. This module adds what BigDecimal lacks: literal
 * bounds checked on the text before any digit is expanded, and one canonical plain text form.
 * Code that adds many values in a loop parses each once (`parse`), works on BigDecimal and
 * formats the result once (`format`), as `sum` does.
 */
import { BigDecimal, Schema } from "effect"

/** Maximum number of digits after the point that we keep (PostgreSQL numeric column is (38,12)). */
export const MAX_SCALE = 12

/**
 * Bounds on a literal, checked on its text before any digit is expanded: `1e-60000` would
 * otherwise become a 60,001-digit string (and `1e999999999` a string too long to build). They
 * are far above what a stored quantity can hold (numeric(38,12): 38 digits) and what Stripe
 * accepts (15 significant digits), so every value that could be billed passes them.
 */
export const MAX_LITERAL_DIGITS = 64
export const MAX_EXPONENT = 64

/**
 * Sign, integer digits, fraction digits, exponent sign, exponent digits. One digit run per
 * group with a fixed character between them, so a failed match backtracks linearly: the
 * earlier `\d+\.?\d*` had two adjacent digit runs and took seconds on a long run of digits
 * followed by a letter.
 */
const LITERAL_RE = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?)(\d+))?$/

/** "syntax": not a decimal literal; "range": a decimal literal beyond the bounds above. */
export type LiteralCheck = "ok" | "syntax" | "range"

/** A literal beyond MAX_LITERAL_DIGITS / MAX_EXPONENT. */
export class DecimalRangeError extends RangeError {}

/**
 * Classifies trimmed text and, when it is within bounds, reads its value. Linear in the text;
 * nothing is expanded before the bounds are checked (`Number` of the exponent's digits is
 * linear too, and its leading zeros carry no value).
 */
const scan = (text: string): BigDecimal.BigDecimal | "syntax" | "range" => {
  const m = LITERAL_RE.exec(text)
  if (m === null) return "syntax"
  const [, sign, int, fraction = "", expSign, expDigits] = m
  const digits = int + fraction
  if (digits.length === 0) return "syntax"
  const exp = expDigits === undefined ? 0 : Number(expDigits)
  if (digits.length > MAX_LITERAL_DIGITS || exp > MAX_EXPONENT) return "range"
  const unscaled = BigInt(digits)
  return BigDecimal.make(sign === "-" ? -unscaled : unscaled, fraction.length + (expSign === "-" ? exp : -exp))
}

/** Cheap (linear in the text, no digit expansion) classification of a literal. */
export const checkLiteral = (s: string): LiteralCheck => {
  const r = scan(s.trim())
  return typeof r === "string" ? r : "ok"
}

/** The value of a decimal literal; throws on text that is not one or is beyond the bounds. */
export const parse = (s: string): BigDecimal.BigDecimal => {
  const r = scan(s.trim())
  if (r === "syntax") throw new Error(`not a decimal: ${JSON.stringify(s.slice(0, 100))}`)
  if (r === "range") throw new DecimalRangeError(`decimal out of range: at most ${MAX_LITERAL_DIGITS} digits and an exponent within ±${MAX_EXPONENT}`)
  return r
}

/**
 * Canonical text: no exponent, no leading zeros, no trailing fractional zeros, "0" for zero.
 * Not `BigDecimal.format`, which switches to exponent notation from 16 digits after the point.
 */
export const format = (d: BigDecimal.BigDecimal): string => {
  // normalized: no trailing zero in the unscaled value (1000 is 1 at scale −3), zero at scale 0
  const n = BigDecimal.normalize(d)
  if (n.scale <= 0) return `${n.value}${"0".repeat(-n.scale)}`
  const digits = BigDecimal.abs(n).value.toString().padStart(n.scale + 1, "0")
  const cut = digits.length - n.scale
  return `${BigDecimal.isNegative(n) ? "-" : ""}${digits.slice(0, cut)}.${digits.slice(cut)}`
}

/** True when `s` is a decimal literal we accept (plain or exponent notation), within the bounds or not. */
export const isDecimal = (s: string): boolean => checkLiteral(s) !== "syntax"

/** Canonical form: no exponent, no leading zeros, no trailing fractional zeros, "0" for zero. */
export const normalize = (s: string): string => format(parse(s))

export const add = (a: string, b: string): string => format(BigDecimal.sum(parse(a), parse(b)))

export const sub = (a: string, b: string): string => format(BigDecimal.subtract(parse(a), parse(b)))

const ZERO = BigDecimal.make(0n, 0)

export const sum = (values: Iterable<string>): string => {
  let acc = ZERO
  for (const v of values) acc = BigDecimal.sum(acc, parse(v))
  return format(acc)
}

export const compare = (a: string, b: string): -1 | 0 | 1 => BigDecimal.Order(parse(a), parse(b))

export const equals = (a: string, b: string): boolean => BigDecimal.equals(parse(a), parse(b))
export const isZero = (a: string): boolean => BigDecimal.isZero(parse(a))
export const isNegative = (a: string): boolean => BigDecimal.isNegative(parse(a))
export const isPositive = (a: string): boolean => BigDecimal.isPositive(parse(a))

/** Integer part toward negative infinity, and the non-negative remainder: floor(a) + frac = a. */
export const splitWhole = (a: string): { readonly whole: string; readonly fraction: string } => {
  const p = parse(a)
  const whole = BigDecimal.floor(p)
  return { whole: format(whole), fraction: format(BigDecimal.subtract(p, whole)) }
}

/** Number of significant digits of the canonical form (Stripe accepts at most 15). */
export const significantDigits = (a: string): number => {
  // normalized: every trailing zero dropped, an integer's too (1000 is 1 at scale −3); zero is "0"
  const n = BigDecimal.normalize(parse(a))
  return BigDecimal.abs(n).value.toString().length + Math.max(0, -n.scale)
}

/** Digits after the point in canonical form. */
export const scaleOf = (a: string): number => Math.max(0, BigDecimal.normalize(parse(a)).scale)

/** A canonical decimal string, validated once at the edge. */
export const DecimalString = Schema.String.pipe(
  Schema.filter((s) => isDecimal(s) || `expected a decimal number, got ${JSON.stringify(s)}`),
  Schema.brand("DecimalString")
)
export type DecimalString = typeof DecimalString.Type

/** Accepts a decimal string and yields its canonical form. */
export const DecimalFromString = Schema.transform(
  Schema.String.pipe(Schema.filter((s) => isDecimal(s) || `expected a decimal number, got ${JSON.stringify(s)}`)),
  DecimalString,
  { decode: (s) => DecimalString.make(normalize(s)), encode: (s) => s }
)

/**
 * Exact decimal arithmetic for quantities. Values travel as canonical decimal strings
 * ("12.5", "-0.001", "0"); arithmetic goes through BigInt with an explicit scale, so no
 * JS number ever touches a billable quantity.
 */
import { Schema } from "effect"

const DECIMAL_RE = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/

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

const LITERAL_RE = /^[+-]?(\d*)(?:\.(\d*))?(?:[eE][+-]?0*(\d+))?$/

/** "syntax": not a decimal literal; "range": a decimal literal beyond the bounds above. */
export type LiteralCheck = "ok" | "syntax" | "range"

/** Cheap (linear in the text, no digit expansion) classification of a literal. */
export const checkLiteral = (s: string): LiteralCheck => {
  const text = s.trim()
  if (!DECIMAL_RE.test(text)) return "syntax"
  const m = LITERAL_RE.exec(text)
  if (!m) return "syntax"
  const digits = (m[1] ?? "").length + (m[2] ?? "").length
  const exp = m[3] ?? "0"
  if (digits > MAX_LITERAL_DIGITS || exp.length > 3 || Number(exp) > MAX_EXPONENT) return "range"
  return "ok"
}

/** A literal beyond MAX_LITERAL_DIGITS / MAX_EXPONENT. */
export class DecimalRangeError extends RangeError {}

interface Parts {
  readonly int: bigint // unscaled value
  readonly scale: number // digits after the point
}

const parts = (s: string): Parts => {
  const text = s.trim()
  const check = checkLiteral(text)
  if (check === "syntax") throw new Error(`not a decimal: ${JSON.stringify(s.slice(0, 100))}`)
  if (check === "range") throw new DecimalRangeError(`decimal out of range: at most ${MAX_LITERAL_DIGITS} digits and an exponent within ±${MAX_EXPONENT}`)
  let [mant, expPart] = text.toLowerCase().split("e") as [string, string | undefined]
  let sign = ""
  if (mant.startsWith("-") || mant.startsWith("+")) {
    sign = mant[0] === "-" ? "-" : ""
    mant = mant.slice(1)
  }
  const [ip, fp = ""] = mant.split(".") as [string, string | undefined]
  let digits = (ip ?? "") + fp
  let scale = fp.length - (expPart ? parseInt(expPart, 10) : 0)
  if (scale < 0) {
    digits = digits + "0".repeat(-scale)
    scale = 0
  }
  return { int: BigInt(sign + (digits === "" ? "0" : digits)), scale }
}

const pow10 = (n: number): bigint => 10n ** BigInt(n)

const align = (a: Parts, b: Parts): [bigint, bigint, number] => {
  const scale = Math.max(a.scale, b.scale)
  return [a.int * pow10(scale - a.scale), b.int * pow10(scale - b.scale), scale]
}

const format = ({ int, scale }: Parts): string => {
  const neg = int < 0n
  let digits = (neg ? -int : int).toString()
  if (scale > 0) {
    digits = digits.padStart(scale + 1, "0")
    const ip = digits.slice(0, digits.length - scale)
    // a loop, not /0+$/: that regex backtracks quadratically over a long run of zeros
    let end = digits.length
    while (end > ip.length && digits.charCodeAt(end - 1) === 0x30) end--
    const fp = digits.slice(ip.length, end)
    digits = fp.length ? `${ip}.${fp}` : ip
  }
  if (digits === "0") return "0"
  return neg ? `-${digits}` : digits
}

/** True when `s` is a decimal literal we accept (plain or exponent notation). */
export const isDecimal = (s: string): boolean => DECIMAL_RE.test(s.trim())

/** Canonical form: no exponent, no leading zeros, no trailing fractional zeros, "0" for zero. */
export const normalize = (s: string): string => format(parts(s))

export const add = (a: string, b: string): string => {
  const [x, y, scale] = align(parts(a), parts(b))
  return format({ int: x + y, scale })
}

export const sub = (a: string, b: string): string => {
  const [x, y, scale] = align(parts(a), parts(b))
  return format({ int: x - y, scale })
}

export const sum = (values: Iterable<string>): string => {
  let acc: Parts = { int: 0n, scale: 0 }
  for (const v of values) {
    const [x, y, scale] = align(acc, parts(v))
    acc = { int: x + y, scale }
  }
  return format(acc)
}

export const compare = (a: string, b: string): -1 | 0 | 1 => {
  const [x, y] = align(parts(a), parts(b))
  return x < y ? -1 : x > y ? 1 : 0
}

export const equals = (a: string, b: string): boolean => compare(a, b) === 0
export const isZero = (a: string): boolean => parts(a).int === 0n
export const isNegative = (a: string): boolean => parts(a).int < 0n
export const isPositive = (a: string): boolean => parts(a).int > 0n

/** Integer part toward negative infinity, and the non-negative remainder: floor(a) + frac = a. */
export const splitWhole = (a: string): { readonly whole: string; readonly fraction: string } => {
  const p = parts(a)
  const unit = pow10(p.scale)
  let q = p.int / unit
  if (p.int < 0n && p.int % unit !== 0n) q -= 1n
  const whole = format({ int: q, scale: 0 })
  return { whole, fraction: format({ int: p.int - q * unit, scale: p.scale }) }
}

/** Number of significant digits of the canonical form (Stripe accepts at most 15). */
export const significantDigits = (a: string): number => {
  const digits = normalize(a).replace("-", "").replace(".", "").replace(/^0+/, "")
  return digits.length === 0 ? 1 : digits.length
}

/** Digits after the point in canonical form. */
export const scaleOf = (a: string): number => {
  const n = normalize(a)
  const i = n.indexOf(".")
  return i < 0 ? 0 : n.length - i - 1
}

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
  { strict: true, decode: (s) => DecimalString.make(normalize(s)), encode: (s) => s }
)

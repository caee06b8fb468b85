/**
 * The one secret scrubber, for logs, spans, error reports, Stripe error messages, database and
 * ClickHouse errors and the demo: secrets should already be `Redacted`, but a Stripe key pasted
 * into an error message or a webhook secret in a context object must still not leave the process.
 */
import { Redacted } from "effect"

export const FILTERED = "[Filtered]"

/**
 * Stripe API keys (secret, restricted, publishable, ephemeral), webhook secrets, bearer tokens,
 * and the password of any URL or DSN (`postgres://user:password@host`).
 */
const SECRET_PATTERNS: ReadonlyArray<RegExp> = [
  /\b(?:sk|rk|pk|ek)_(?:live|test)_[A-Za-z0-9_]+/g,
  /\bwhsec_[A-Za-z0-9+/=_]+/g,
  /\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/gi,
  /(\/\/[^:/@\s]*:)[^@/\s]*@/g
]

const SECRET_KEY = /secret|password|passwd|token|authorization|api[-_]?key|private[-_]?key|encryption[-_]?key|^key$|dsn|cookie|signature/i

/**
 * Replaces every secret-looking part of `s` (and each of `literals`, the caller's own secrets
 * of 6 characters or more) with `marker`.
 */
export const scrubString = (
  s: string,
  options: { readonly literals?: ReadonlyArray<string>; readonly marker?: string } = {}
): string => {
  const marker = options.marker ?? FILTERED
  let out = s
  for (const literal of options.literals ?? []) {
    if (literal.length >= 6) out = out.split(literal).join(marker)
  }
  return SECRET_PATTERNS.reduce(
    (acc, re) => acc.replace(re, (m, p1: unknown) => (typeof p1 === "string" && m.startsWith(p1) ? `${p1}${marker}@` : marker)),
    out
  )
}

/** Deep copy with secret-looking keys and values replaced. Cycles and depth are bounded. */
export const scrub = (value: unknown, depth = 0, seen: WeakSet<object> = new WeakSet()): unknown => {
  if (typeof value === "string") return scrubString(value)
  if (value === null || typeof value !== "object") {
    return typeof value === "bigint" ? value.toString() : typeof value === "function" ? undefined : value
  }
  if (Redacted.isRedacted(value)) return FILTERED
  if (depth > 8 || seen.has(value)) return "[…]"
  seen.add(value)
  if (value instanceof Date) return value.toISOString()
  if (value instanceof Error) {
    return { name: value.name, message: scrubString(value.message) }
  }
  if (Array.isArray(value)) return value.slice(0, 100).map((v) => scrub(v, depth + 1, seen))
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) && !(typeof v === "boolean" || typeof v === "number") ? FILTERED : scrub(v, depth + 1, seen)
  }
  return out
}

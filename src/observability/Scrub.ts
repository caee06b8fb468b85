/**
 * Defence in depth for logs and error reports: secrets should already be `Redacted`, but a
 * Stripe key pasted into an error message or a webhook secret in a context object must still
 * not leave the process.
 */
import { Redacted } from "effect"

export const FILTERED = "[Filtered]"

/** Stripe secret/restricted keys, webhook secrets, bearer tokens, basic-auth URLs. */
const SECRET_PATTERNS: ReadonlyArray<RegExp> = [
  /\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{4,}/g,
  /\bwhsec_[A-Za-z0-9+/=]{4,}/g,
  /\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/gi,
  /(\/\/[^:/@\s]+:)[^@/\s]+@/g
]

const SECRET_KEY = /secret|password|passwd|token|authorization|api[-_]?key|private[-_]?key|encryption[-_]?key|^key$|dsn|cookie|signature/i

export const scrubString = (s: string): string =>
  SECRET_PATTERNS.reduce(
    (acc, re) => acc.replace(re, (m, p1: unknown) => (typeof p1 === "string" && m.startsWith(p1) ? `${p1}${FILTERED}@` : FILTERED)),
    s
  )

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

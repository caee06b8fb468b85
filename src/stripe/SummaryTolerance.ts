/**
 * Comparing a Stripe meter event summary with the exact ledger. Stripe aggregates meter event
 * values as IEEE 754 doubles: `aggregated_value` is a JSON number ("number", format double, in
 * the OpenAPI description of billing.meter_event_summary,
 * https://docs.stripe.com/api/billing/meter-event-summary/object), so a summary of 0.1 three
 * times reads 0.30000000000000004, never exactly 0.3. Equality between that and an exact decimal
 * total would call every such hour drifted; a tolerance at double precision does not.
 *
 * The bound: summing n values as doubles rounds each value once (relative error ≤ 2^-53) and
 * each of the n − 1 additions once (≤ 2^-53 × |partial sum| ≤ 2^-53 × Σ|v|), and the shortest
 * printed form of the result is within half an ulp of it (≤ 2^-53 × |sum|). All together
 * |stripe − exact| ≤ 2n × 2^-53 × Σ|v| = n × 2^-52 × Σ|v|. Σ|v| (not |Σv|) because negative
 * values are allowed and cancel in the sum but not in the rounding errors. Any real drift — a
 * missing or doubled event — is at least the smallest event, far above this for values a meter
 * carries (≤ 15 significant digits, Stripe's own rule).
 */
import * as Decimal from "../domain/Decimal.js"

/** 2^52 */
const TWO_POW_52 = 4503599627370496n

const abs = (a: string): string => (Decimal.isNegative(a) ? Decimal.sub("0", a) : a)

/** `a` × k, exactly (k a non-negative integer), by repeated doubling: k is small here. */
const times = (a: string, k: bigint): string => {
  let result = "0"
  let addend = a
  let n = k
  while (n > 0n) {
    if (n & 1n) result = Decimal.add(result, addend)
    addend = Decimal.add(addend, addend)
    n >>= 1n
  }
  return result
}

export interface SummedEvents {
  /** Exact Σv of the events Stripe summed. */
  readonly exact: string
  /** Exact Σ|v|. */
  readonly absTotal: string
  /** How many events were summed. */
  readonly events: number
}

/** True when Stripe's double sum is what summing exactly these events as doubles can give. */
export const matchesDoubleSum = (stripe: string, { absTotal, events, exact }: SummedEvents): boolean => {
  const diff = abs(Decimal.sub(stripe, exact))
  if (Decimal.isZero(diff)) return true
  // diff ≤ n × 2^-52 × Σ|v|  ⇔  diff × 2^52 ≤ n × Σ|v|
  return Decimal.compare(times(diff, TWO_POW_52), times(abs(absTotal), BigInt(Math.max(events, 1)))) <= 0
}

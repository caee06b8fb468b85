/**
 * What a batch sends to Stripe, and what it carries forward (pure, exact decimals).
 *
 * For each (customer, meter) the ledger keeps `aggregated_quantity` and `sent_quantity` per
 * batch; the outstanding amount is Σ aggregated − Σ sent over the batches that were assigned a
 * sent quantity. A new batch sends:
 *   - whole units: the integer part of (outstanding + quantity);
 *   - otherwise: (outstanding + quantity) itself;
 * in both cases truncated toward zero to Stripe's 15 significant digits. The rest stays
 * outstanding, so Σ sent never exceeds Σ aggregated and, for whole units, falls short by less
 * than one unit (for values below 10^15).
 */
import * as Decimal from "../domain/Decimal.js"

/** Stripe accepts at most 15 significant digits in a meter event value. */
export const STRIPE_MAX_SIGNIFICANT_DIGITS = 15

/** Truncates a decimal toward zero to `digits` significant digits. */
export const truncateSignificant = (value: string, digits: number = STRIPE_MAX_SIGNIFICANT_DIGITS): string => {
  const n = Decimal.normalize(value)
  if (Decimal.significantDigits(n) <= digits) return n
  const negative = n.startsWith("-")
  const abs = negative ? n.slice(1) : n
  const point = abs.indexOf(".")
  const intPart = point < 0 ? abs : abs.slice(0, point)
  const fracPart = point < 0 ? "" : abs.slice(point + 1)
  const all = intPart + fracPart
  let first = 0
  while (first < all.length && all[first] === "0") first++
  const keep = first + digits
  const kept = all.slice(0, keep) + "0".repeat(Math.max(0, all.length - keep))
  const rebuilt = fracPart.length > 0 ? `${kept.slice(0, intPart.length)}.${kept.slice(intPart.length)}` : kept
  return Decimal.normalize(negative ? `-${rebuilt}` : rebuilt)
}

export interface SendAmount {
  /** What Stripe receives for this batch (≥ 0, ≤ 15 significant digits). */
  readonly sent: string
  /** What is still owed to Stripe for this (customer, meter) after this batch. */
  readonly outstanding: string
}

/**
 * @param outstanding Σ aggregated − Σ sent of the earlier batches of this (customer, meter)
 * @param quantity    this batch's aggregated quantity (≥ 0)
 */
export const amountToSend = (outstanding: string, quantity: string, wholeUnits: boolean): SendAmount => {
  const total = Decimal.add(outstanding, quantity)
  if (!Decimal.isPositive(total)) return { sent: "0", outstanding: total }
  const base = wholeUnits ? Decimal.splitWhole(total).whole : total
  const sent = truncateSignificant(base)
  return { sent, outstanding: Decimal.sub(total, sent) }
}

/**
 * What a batch sends to Stripe, and what it carries forward (pure, exact decimals).
 *
 * For each (customer, meter) the ledger keeps `aggregated_quantity` and `sent_quantity` per
 * batch; the outstanding amount is Σ aggregated − Σ sent over the batches that were assigned a
 * sent quantity. A new batch sends:
 *   - whole units: the integer part of (outstanding + quantity);
 *   - otherwise: (outstanding + quantity) itself;
 * in both cases reduced toward zero to the largest value Stripe accepts: at most 15 significant
 * digits, where every digit of the integer part counts (Stripe's changelog 2026-04-22 "Adds
 * validation for billing meter event values with more than 15 digits",
 * https://docs.stripe.com/changelog/dahlia/2026-04-22/billing-meter-event-values-validation:
 * "The value in the event payload can have at most `max_digits` digits", error code
 * `meter_event_value_too_many_digits`). So "1000000000000000" (10^15) has 16 digits and cannot be
 * sent; the largest sendable value is 999999999999999.
 *
 * A value that 15 digits cannot express is NOT split into several meter events for the same
 * window: one batch is one meter event with one deterministic identifier (the unit of
 * exactly-once, see Identifier.ts), and several events per batch would need several identifiers
 * and partial-success bookkeeping in the push path. Instead the excess is carried exactly like the
 * whole-unit fraction: the batch records `sent_quantity` = what was sent and the difference stays
 * outstanding in the ledger (Σ aggregated − Σ sent), added to the next batch of the same
 * (customer, meter) — a later window, a late-event delta, or a released held batch. Nothing is
 * lost: Σ sent never exceeds Σ aggregated, the shortfall is always visible in the ledger, and
 * for whole units it stays below one unit as long as no single send needs 10^15 or more.
 *
 * Negative quantities are corrections (Stripe sums negative meter event values: "you can send a
 * negative value to correct previously sent usage", https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage#correct-usage)
 * and are sent like any other amount: a negative late event becomes a negative delta and a window
 * whose net is negative is sent negative. Whole units round toward −∞ (`splitWhole`), so a
 * correction never leaves Stripe above the exact total; the fraction is carried as usual. Only
 * the 15-digit truncation of a negative amount rounds toward zero: the sub-unit remainder (below
 * the 15th significant digit) is carried and settled by the next batch.
 */
import * as Decimal from "../domain/Decimal.js"

/** Stripe accepts at most 15 significant digits in a meter event value. */
export const STRIPE_MAX_SIGNIFICANT_DIGITS = 15

/**
 * The value of largest magnitude between 0 and `value` (inclusive) with at most `digits`
 * significant digits as Stripe counts them: truncated toward zero, and capped at ±(10^digits − 1)
 * when the integer part alone has more than `digits` digits.
 */
export const truncateSignificant = (value: string, digits: number = STRIPE_MAX_SIGNIFICANT_DIGITS): string => {
  const n = Decimal.normalize(value)
  const negative = n.startsWith("-")
  const sign = negative ? "-" : ""
  const [intPart, fracPart = ""] = (negative ? n.slice(1) : n).split(".") as [string, string | undefined]
  if (intPart.length > digits) return `${sign}${"9".repeat(digits)}`
  // The integer part fits and is kept whole; only fraction digits are dropped. A zero integer part
  // is not significant and the fraction's leading zeros are not either, so they cost no digits.
  const used = intPart === "0" ? -(fracPart.length - fracPart.replace(/^0+/, "").length) : intPart.length
  return Decimal.normalize(`${sign}${intPart}.${fracPart.slice(0, digits - used)}`)
}

export interface SendAmount {
  /** What Stripe receives for this batch (≤ 15 significant digits; negative for a correction). */
  readonly sent: string
  /** What is still owed to Stripe for this (customer, meter) after this batch. */
  readonly outstanding: string
}

/**
 * @param outstanding Σ aggregated − Σ sent of the earlier batches of this (customer, meter)
 * @param quantity    this batch's aggregated quantity (negative for a net correction)
 */
export const amountToSend = (outstanding: string, quantity: string, wholeUnits: boolean): SendAmount => {
  const total = Decimal.add(outstanding, quantity)
  if (Decimal.isZero(total)) return { sent: "0", outstanding: "0" }
  const base = wholeUnits ? Decimal.splitWhole(total).whole : total
  const sent = truncateSignificant(base)
  return { sent, outstanding: Decimal.sub(total, sent) }
}

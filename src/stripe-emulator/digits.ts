/**
 * The emulator's own reading of a meter event value, independent of the product's Decimal module
 * so a bug there cannot hide behind the same bug here.
 *
 * Stripe: a meter event value is a numeric string with at most 15 significant digits (the
 * precision an IEEE double keeps exactly); more → `meter_event_value_too_many_digits`
 * (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#error-codes).
 * Negative values are accepted: they are how usage is corrected
 * (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage#correct-usage).
 */

/** Plain decimal notation only: optional sign, digits, optional fraction. No exponent, no spaces. */
const NUMERIC = /^[+-]?(\d+(\.\d*)?|\.\d+)$/

export const isNumericString = (s: string): boolean => NUMERIC.test(s)

/**
 * Significant digits of a numeric string: the digits between the first and the last non-zero
 * digit ("0.00120" → 2, "1500" → 2, "100.5" → 4, "0" → 1). Zeros that only place the point are
 * not significant; an IEEE double holds them exactly.
 */
export const countSignificantDigits = (s: string): number => {
  let first = -1
  let last = -1
  let position = 0
  for (const ch of s) {
    if (ch < "0" || ch > "9") continue
    if (ch !== "0") {
      if (first < 0) first = position
      last = position
    }
    position++
  }
  return first < 0 ? 1 : last - first + 1
}

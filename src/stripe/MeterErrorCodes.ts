/**
 * Stripe's codes for meter events the v2 stream accepted and then dropped, as reported in
 * `v1.billing.meter.error_report_triggered` → `reason.error_types[].code` (stripe-node's
 * `V1BillingMeterErrorReportTriggeredEvent.Data.Reason.ErrorType.Code`, an open enum;
 * https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#error-handling).
 */

/** A customer mapping fix can cure these (the event named no Stripe customer, or a missing one). */
export const CUSTOMER_CODES: ReadonlyArray<string> = ["meter_event_customer_not_found", "meter_event_no_customer_defined"]

/** A meter mapping fix can cure these (the meter is archived, or no meter has the event name). */
export const METER_CODES: ReadonlyArray<string> = ["archived_meter", "no_meter"]

const KNOWN_CODES = new Set([
  ...CUSTOMER_CODES,
  ...METER_CODES,
  "meter_event_dimension_count_too_high",
  "meter_event_invalid_value",
  "meter_event_value_too_many_digits",
  "missing_dimension_payload_keys",
  "timestamp_in_future",
  "timestamp_too_far_in_past"
])

/** Metric label: Stripe's documented codes, anything else `other`, so the series stay bounded. */
export const codeLabel = (code: string): string => (KNOWN_CODES.has(code) ? code : "other")

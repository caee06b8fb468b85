/** Public surface of the Stripe client. */
export * as CircuitBreaker from "./CircuitBreaker.js"
export {
  type MeterEvent,
  type MeterEventOutcome,
  type MeterEventSummary,
  type MeterEventSummaryQuery,
  type MeterStreamResult,
  type StripeAccountInfo,
  type StripeAccountRef,
  StripeClient,
  type StripeClientService,
  type StripeCustomer,
  type StripeCustomerPage,
  type StripeMeter,
  makeStripeClient
} from "./StripeClient.js"
export * from "./StripeErrors.js"
export * as StripeMetrics from "./StripeMetrics.js"
export * as StripeRetry from "./StripeRetry.js"
export * from "./StripeSettings.js"

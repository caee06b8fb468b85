/**
 * StripeClient: every Stripe call the product makes, over the official `stripe` SDK, with
 * per-tenant back-pressure and typed failures. This module holds the service's interface, its
 * data types and its Tag; the parts live in their own modules:
 *
 *   StripeClientLive.ts  the operations (SDK requests and their mapping to these types)
 *   StripeCall.ts        one call: span → metrics → key lock → breaker → retry → semaphore → limiter
 *   StripeTenants.ts     per-tenant limiters, semaphore, breaker and session; v1 keyed locks
 *   MeterEventSession.ts the v2 meter event stream and its session token
 *   StripePagination.ts  Stripe's cursor pagination as a lazy stream
 *   StripeErrorClass.ts  what each failure means (retry, breaker, metrics, sync)
 */
import { Context, Effect, Layer, type Redacted, type Stream } from "effect"
import type * as CircuitBreaker from "./CircuitBreaker.js"
import { makeStripeClient } from "./StripeClientLive.js"
import type { StripeError } from "./StripeErrors.js"
import { makeSettings, type StripeClientSettingsInput, settingsConfig } from "./StripeSettings.js"

export { makeStripeClient } from "./StripeClientLive.js"

// ---------------------------------------------------------------------------------------------
// Public data types

/** Which Stripe account a call is for, and whose budget (limiter, semaphore, breaker) it spends. */
export interface StripeAccountRef {
  /** Tenant/environment id used to bucket limiter, semaphore, breaker and session. Not secret. */
  readonly tenantKey: string
  readonly apiKey: Redacted.Redacted<string>
  /** Sizes the rate limiter (live vs test limits). */
  readonly livemode: boolean
}

export interface StripeAccountInfo {
  readonly id: string
  readonly livemode: boolean
  readonly displayName: string | null
}

export interface StripeCustomer {
  readonly id: string
  readonly email: string | null
  readonly name: string | null
  readonly metadata: Readonly<Record<string, string>>
  /** Unix seconds. */
  readonly created: number
  readonly deleted: boolean
}

export interface StripeCustomerPage {
  readonly customers: ReadonlyArray<StripeCustomer>
  /** Cursor to resume after this page (the last customer id), or the incoming cursor on an empty page. */
  readonly lastId: string | undefined
  readonly hasMore: boolean
}

export interface StripeMeter {
  readonly id: string
  readonly eventName: string
  readonly displayName: string
  readonly status: "active" | "inactive" | (string & {})
  readonly customerPayloadKey: string
  readonly valuePayloadKey: string
  /** `last` is what MAX/LATEST meters need; anything else Stripe may add comes through as is. */
  readonly formula: "count" | "sum" | "last" | (string & {})
  /**
   * `hour` | `day`: a pre-aggregated meter, which keeps only the newest event per customer per
   * hour/day; null: raw (every event counts). Billing Meter object, `event_time_window`
   * (docs.stripe.com/api/billing/meter/object).
   */
  readonly eventTimeWindow: "hour" | "day" | (string & {}) | null
}

export interface MeterEvent {
  readonly eventName: string
  /** Deterministic; also the v1 Idempotency-Key. ≤ 100 characters. */
  readonly identifier: string
  readonly timestamp: Date
  /** Customer and value payload keys; the value is a decimal string. */
  readonly payload: Readonly<Record<string, string>>
}

export type MeterEventOutcome = "delivered" | "duplicate"

export interface MeterStreamResult {
  /** HTTP requests made to the stream endpoint (session creations not included). */
  readonly requests: number
  readonly events: number
}

export interface MeterEventSummary {
  readonly startTime: Date
  readonly endTime: Date
  /** Exact decimal string as Stripe wrote it. */
  readonly aggregatedValue: string
}

export interface MeterEventSummaryQuery {
  readonly meterId: string
  readonly customer: string
  /** Minute-aligned. */
  readonly startTime: Date
  /** Minute-aligned, exclusive. */
  readonly endTime: Date
}

/**
 * A v2 event as `GET /v2/core/events/:id` returns it (https://docs.stripe.com/api/v2/core/events/object):
 * the full event behind a thin notification. `data` is read by whoever knows the event type.
 */
export interface StripeV2Event {
  readonly id: string
  readonly type: string
  /** The connected account the event belongs to (`context`), or null for the account itself. */
  readonly context: string | null
  readonly relatedObject: { readonly id: string; readonly type: string } | null
  readonly data: unknown
}

export interface StripeClientService {
  /** GET /v1/account — connection test. */
  readonly retrieveAccount: (ref: StripeAccountRef) => Effect.Effect<StripeAccountInfo, StripeError>
  /** GET /v1/customers/:id (a deleted customer comes back with `deleted: true`). */
  readonly retrieveCustomer: (ref: StripeAccountRef, customerId: string) => Effect.Effect<StripeCustomer, StripeError>
  /** Pages of 100, newest first, from `startingAfter` (exclusive) on. Lazy: one request per pulled page. */
  readonly streamCustomerPages: (
    ref: StripeAccountRef,
    startingAfter?: string
  ) => Stream.Stream<StripeCustomerPage, StripeError>
  /** Every customer, one at a time, never all in memory. */
  readonly streamCustomers: (ref: StripeAccountRef) => Stream.Stream<StripeCustomer, StripeError>
  readonly retrieveMeter: (ref: StripeAccountRef, meterId: string) => Effect.Effect<StripeMeter, StripeError>
  readonly listMeters: (ref: StripeAccountRef) => Effect.Effect<ReadonlyArray<StripeMeter>, StripeError>
  /**
   * v2 meter event stream: ≤ 100 events a request; chunks go one at a time unless
   * `concurrency` > 1 (still bounded by the tenant's stream permits, STRIPE_METER_STREAM_MAX_CONCURRENCY). On failure the chunks sent before
   * were accepted; re-sending all events is safe (identifier dedup, 24 h).
   */
  readonly sendMeterEventsStream: (
    ref: StripeAccountRef,
    events: ReadonlyArray<MeterEvent>,
    options?: { readonly concurrency?: number }
  ) => Effect.Effect<MeterStreamResult, StripeError>
  /**
   * v1 POST /v1/billing/meter_events under a new Idempotency-Key per attempt (Stripe replays a
   * saved answer under a key for 24 h); the identifier, and so Stripe's dedup, stays the same.
   * Calls for the same (event name, customer) never overlap. `customerPayloadKey` defaults to
   * `stripe_customer_id`.
   */
  readonly sendMeterEventV1: (
    ref: StripeAccountRef,
    event: MeterEvent,
    options?: { readonly customerPayloadKey?: string }
  ) => Effect.Effect<MeterEventOutcome, StripeError>
  /** Hourly summaries for one customer and meter over [startTime, endTime), oldest first. */
  readonly listMeterEventSummaries: (
    ref: StripeAccountRef,
    query: MeterEventSummaryQuery
  ) => Effect.Effect<ReadonlyArray<MeterEventSummary>, StripeError>
  /** GET /v2/core/events/:id, with `Stripe-Context` when the event belongs to a connected account. */
  readonly retrieveV2Event: (ref: StripeAccountRef, eventId: string, context: string | null) => Effect.Effect<StripeV2Event, StripeError>
  /** The tenant's breaker state (for /v1/stripe/sync/status and tests). */
  readonly circuitState: (ref: StripeAccountRef) => Effect.Effect<CircuitBreaker.CircuitStateName>
}

export class StripeClient extends Context.Tag("flexprice/StripeClient")<StripeClient, StripeClientService>() {
  /** From STRIPE_* environment variables (see StripeSettings.settingsConfig). */
  static readonly layer: Layer.Layer<StripeClient, import("effect/ConfigError").ConfigError> = Layer.scoped(
    StripeClient,
    Effect.flatMap(settingsConfig, (s) => makeStripeClient(s))
  )
  /** From explicit settings, e.g. `StripeClient.layerWith(emulatorSettings(emulator.url, {...}))`. */
  static readonly layerWith = (settings: StripeClientSettingsInput): Layer.Layer<StripeClient> =>
    Layer.scoped(StripeClient, makeStripeClient(makeSettings(settings)))
}


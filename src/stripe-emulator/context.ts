/**
 * What every part of the emulator's HTTP surface shares: the emulated account's mutable state
 * (`EmulatorContext`) and the per-request facts the middleware computes once (`RequestInfo`).
 */
import { Context, type Deferred, type Effect } from "effect"
import type { Faults } from "./faults.js"
import type { FormObject } from "./form.js"
import type { RateLimiter } from "./limits.js"
import type { EmulatorState } from "./state.js"
import type { WebhookManager } from "./webhooks.js"

export interface HoldRule {
  readonly match: (request: { readonly method: string; readonly path: string }) => boolean
  remaining: number
  /** true: the request is applied, then its answer is held; false: held before it is applied. */
  readonly applyFirst: boolean
}

export interface HeldRequest {
  readonly method: string
  readonly path: string
  readonly applied: boolean
  readonly deferred: Deferred.Deferred<void>
}

export interface Counters {
  total: number
  /** v1 meter event calls that arrived while another for the same (meter, customer) was in flight. */
  v1Overlaps: number
  readonly byEndpoint: Map<string, number>
  readonly byStatus: Map<number, number>
}

/** A result saved under an Idempotency-Key (https://docs.stripe.com/api/idempotent_requests). */
export interface StoredResponse {
  readonly fingerprint: string
  readonly status: number
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

export interface EmulatorContext {
  /**
   * The account's secret keys: "active", or "expired" once rolled
   * (https://docs.stripe.com/keys#rolling-keys). Values are the raw keys; never logged or echoed.
   */
  readonly keys: Map<string, "active" | "expired">
  readonly livemode: boolean
  readonly state: EmulatorState
  readonly faults: Faults
  readonly webhooks: WebhookManager
  readonly now: Effect.Effect<number>
  readonly advanceClock: (ms: number) => void
  readonly counters: Counters
  readonly holdRules: Array<HoldRule>
  readonly held: Array<HeldRequest>
  readonly heldWaiters: Array<{ readonly n: number; readonly deferred: Deferred.Deferred<void> }>
  readonly idempotency: Map<string, StoredResponse | "in_flight">
  readonly v1InFlight: Map<string, number>
  readonly streamValidation: "async" | "sync"
  readonly rateLimiter: RateLimiter
  /** Refuse a v1 meter event while another for the same customer + meter is in flight. */
  v1ConcurrencyLimit: boolean
  /** How long an accepted event takes to show in event summaries. */
  summaryDelayMs: number
  /** The v2 event destination (thin events such as `v1.billing.meter.error_report_triggered`). */
  readonly eventDestination: WebhookManager
}

/** Per-request facts the middleware computes once and the route handlers read. */
export class RequestInfo extends Context.Tag("StripeEmulator/RequestInfo")<
  RequestInfo,
  {
    readonly requestId: string
    readonly body: string
    readonly query: FormObject
    readonly idempotencyKey: string | null
  }
>() {}

/**
 * The emulated Stripe account's data model: Stripe's object shapes, the documented limits and
 * the list pagination Stripe's list endpoints share.
 */
import { randomToken } from "../../domain/Ids.js"
import { noSuch } from "../errors.js"

export const DEDUP_WINDOW_MS = 24 * 60 * 60 * 1000
export const MAX_PAST_SECONDS = 35 * 24 * 60 * 60
export const MAX_FUTURE_SECONDS = 5 * 60
export const SESSION_TTL_MS = 15 * 60 * 1000
export const MAX_STREAM_EVENTS = 100
export const MAX_SIGNIFICANT_DIGITS = 15

const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
/** Stripe-looking id tail (mixed-case alphanumerics). */
export const stripeId = (prefix: string, length = 24): string => {
  let out = `${prefix}_`
  const token = randomToken(length * 2)
  for (let i = 0; i < length; i++) {
    out += ALNUM[(token.charCodeAt(i) * 31 + token.charCodeAt(i + length)) % ALNUM.length]
  }
  return out
}

export type Metadata = Readonly<Record<string, string>>

export interface Customer {
  readonly id: string
  readonly object: "customer"
  readonly address: null
  readonly balance: number
  readonly created: number
  readonly currency: null
  readonly default_source: null
  readonly delinquent: boolean
  readonly description: string | null
  readonly discount: null
  readonly email: string | null
  readonly invoice_prefix: string
  readonly invoice_settings: {
    readonly custom_fields: null
    readonly default_payment_method: null
    readonly footer: null
    readonly rendering_options: null
  }
  readonly livemode: boolean
  readonly metadata: Metadata
  readonly name: string | null
  readonly next_invoice_sequence: number
  readonly phone: string | null
  readonly preferred_locales: ReadonlyArray<string>
  readonly shipping: null
  readonly tax_exempt: "none"
  readonly test_clock: null
}

export interface DeletedCustomer {
  readonly id: string
  readonly object: "customer"
  readonly deleted: true
}

export type MeterFormula = "sum" | "count" | "last"

export interface Meter {
  readonly id: string
  readonly object: "billing.meter"
  readonly created: number
  readonly customer_mapping: { readonly event_payload_key: string; readonly type: "by_id" }
  readonly default_aggregation: { readonly formula: MeterFormula }
  readonly display_name: string
  readonly event_name: string
  readonly event_time_window: "day" | "hour" | null
  readonly livemode: boolean
  readonly status: "active" | "inactive"
  readonly status_transitions: { readonly deactivated_at: number | null }
  readonly updated: number
  readonly value_settings: { readonly event_payload_key: string }
}

/** Stripe's v1 meter event object. */
export interface MeterEvent {
  readonly object: "billing.meter_event"
  readonly created: number
  readonly event_name: string
  readonly identifier: string
  readonly livemode: boolean
  readonly payload: Readonly<Record<string, string>>
  readonly timestamp: number
}

/** What the emulator keeps per accepted event (for inspection). */
export interface MeterEventRecord {
  readonly identifier: string
  readonly eventName: string
  readonly meterId: string
  readonly customer: string
  /** Canonical decimal string; "0" for count meters given no value. */
  readonly value: string
  /** Event time, unix seconds. */
  readonly timestamp: number
  /** Acceptance time, unix milliseconds (emulator clock). */
  readonly acceptedAtMs: number
  readonly via: "v1" | "v2"
  readonly payload: Readonly<Record<string, string>>
}

/**
 * One valid meter event as it arrived, accepted or not: the raw log that exactly-once checks count
 * (a resend Stripe deduplicates by identifier never shows in `meterEvents`, only here).
 */
export interface ReceivedMeterEvent {
  readonly identifier: string
  readonly customer: string
  readonly eventName: string
  readonly value: string
  readonly via: "v1" | "v2"
  readonly outcome: "accepted" | "duplicate"
  readonly atMs: number
}

export interface Totals {
  readonly customer: string
  readonly eventName: string
  /** Exact decimal string: the sum of accepted values. */
  readonly sum: string
  readonly count: number
}

export interface MeterEventSession {
  readonly id: string
  readonly object: "v2.billing.meter_event_session"
  readonly authentication_token: string
  readonly created: string
  readonly expires_at: string
  readonly livemode: boolean
}

export interface StreamEventError {
  readonly identifier: string | undefined
  readonly eventName: string | undefined
  readonly code: string
  readonly message: string
  readonly atMs: number
}

export interface MeterEventInput {
  readonly event_name?: string | undefined
  readonly payload?: Readonly<Record<string, unknown>> | undefined
  readonly identifier?: string | undefined
  /** Unix seconds. */
  readonly timestamp?: number | undefined
}

export interface SummaryBucket {
  readonly start: number
  readonly end: number
  /** A double, as Stripe's `aggregated_value`. */
  readonly value: number
}

/** One accepted event as the summaries see it. */
export interface Counted {
  readonly timestamp: number
  readonly value: string
  readonly double: number
  readonly acceptedAtMs: number
  readonly seq: number
  /** A newer event replaced it in its pre-aggregation window. */
  replaced: boolean
}

export interface CustomerEntry {
  customer: Customer
  deleted: boolean
  readonly index: number
}

export interface Page<A> {
  readonly data: ReadonlyArray<A>
  readonly hasMore: boolean
}

export interface ListParams {
  readonly limit?: number | undefined
  readonly startingAfter?: string | undefined
  readonly endingBefore?: string | undefined
}

/** Newest-first pagination over an append-only id array; `skip` hides deleted rows. */
export const paginate = <A>(
  order: ReadonlyArray<string>,
  indexOf: (id: string) => number | undefined,
  get: (id: string) => A | undefined,
  params: ListParams,
  cursorKind: string
): Page<A> => {
  const limit = params.limit ?? 10
  const out: Array<A> = []
  if (params.endingBefore !== undefined) {
    const idx = indexOf(params.endingBefore)
    if (idx === undefined) throw noSuch(cursorKind, params.endingBefore, "ending_before")
    let i = idx + 1
    for (; i < order.length && out.length < limit; i++) {
      const item = get(order[i]!)
      if (item !== undefined) out.push(item)
    }
    let hasMore = false
    for (; i < order.length; i++) {
      if (get(order[i]!) !== undefined) {
        hasMore = true
        break
      }
    }
    return { data: out.reverse(), hasMore }
  }
  let start = order.length - 1
  if (params.startingAfter !== undefined) {
    const idx = indexOf(params.startingAfter)
    if (idx === undefined) throw noSuch(cursorKind, params.startingAfter, "starting_after")
    start = idx - 1
  }
  let i = start
  for (; i >= 0 && out.length < limit; i--) {
    const item = get(order[i]!)
    if (item !== undefined) out.push(item)
  }
  let hasMore = false
  for (; i >= 0; i--) {
    if (get(order[i]!) !== undefined) {
      hasMore = true
      break
    }
  }
  return { data: out, hasMore }
}

export interface CustomerParams {
  readonly name?: string | null
  readonly email?: string | null
  readonly description?: string | null
  readonly phone?: string | null
  readonly metadata?: Readonly<Record<string, string>> | string
}

export interface MeterParams {
  readonly display_name: string
  readonly event_name: string
  readonly default_aggregation?: { readonly formula: MeterFormula }
  readonly customer_mapping?: { readonly event_payload_key?: string; readonly type?: "by_id" }
  readonly value_settings?: { readonly event_payload_key?: string }
  /** Pre-aggregated meter: only the newest event per customer per hour/day counts. */
  readonly event_time_window?: "hour" | "day"
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/

/** Parses a v2 (RFC 3339) timestamp into unix seconds. */
export const parseRfc3339 = (s: string): number | undefined => {
  if (!RFC3339.test(s)) return undefined
  const ms = Date.parse(s)
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000)
}


export const iso = (ms: number): string => new Date(ms).toISOString()

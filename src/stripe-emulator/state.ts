/**
 * The emulator's in-memory Stripe account. Plain synchronous code over Maps so a request costs
 * O(1) (O(page) for lists): the benchmark pushes ~100,000 meter events through it. Time is
 * always passed in (`nowMs`) so the caller decides which clock applies.
 */
import * as Decimal from "../domain/Decimal.js"
import { randomToken } from "../domain/Ids.js"
import { invalidParam, invalidRequest, missingParam, noSuch, StripeEmulatorError } from "./errors.js"
import type { FormObject, FormValue } from "./form.js"
import { countSignificantDigits, isNumericString } from "./digits.js"

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
  /** "duplicate": an identifier accepted within 24 h — v1 answers 400, the stream drops it silently. */
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
interface Counted {
  readonly timestamp: number
  readonly value: string
  readonly double: number
  readonly acceptedAtMs: number
  readonly seq: number
  /** A newer event replaced it in its pre-aggregation window. */
  replaced: boolean
}

interface CustomerEntry {
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
const paginate = <A>(
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

const METADATA_MAX_KEYS = 50

const readMetadata = (
  value: FormValue | undefined,
  current: Metadata | undefined
): Record<string, string> => {
  const next: Record<string, string> = { ...(current ?? {}) }
  if (value === undefined) return next
  // `metadata=` (empty string) clears every key, as in Stripe.
  if (typeof value === "string") {
    if (value === "") return {}
    throw invalidParam("metadata", "Invalid object")
  }
  if (Array.isArray(value)) throw invalidParam("metadata", "Invalid object")
  for (const [k, v] of Object.entries(value as FormObject)) {
    if (typeof v !== "string") throw invalidParam(`metadata[${k}]`, "Invalid string: metadata values must be strings")
    if (k.length > 40) throw invalidParam(`metadata[${k}]`, "Metadata keys can have up to 40 characters.")
    if (v.length > 500) throw invalidParam(`metadata[${k}]`, "Metadata values can have up to 500 characters.")
    if (v === "") delete next[k]
    else next[k] = v
  }
  if (Object.keys(next).length > METADATA_MAX_KEYS) {
    throw invalidParam("metadata", "Metadata can have up to 50 keys.")
  }
  return next
}

const optionalString = (v: FormValue | undefined, param: string): string | null | undefined => {
  if (v === undefined) return undefined
  if (typeof v !== "string") throw invalidParam(param, `Invalid string: ${param}`)
  return v === "" ? null : v
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

const iso = (ms: number): string => new Date(ms).toISOString()

/**
 * Exact running sums kept as unscaled BigInts: the hot path adds ~100,000 values, so each value
 * is parsed once (from its canonical Decimal form) and formatted only when read.
 */
interface Acc {
  int: bigint
  scale: number
}

const accOf = (canonical: string): Acc => {
  const dot = canonical.indexOf(".")
  return dot < 0
    ? { int: BigInt(canonical), scale: 0 }
    : { int: BigInt(canonical.slice(0, dot) + canonical.slice(dot + 1)), scale: canonical.length - dot - 1 }
}

const accAdd = (into: Acc, v: Acc): void => {
  if (v.scale > into.scale) {
    into.int = into.int * 10n ** BigInt(v.scale - into.scale) + v.int
    into.scale = v.scale
  } else {
    into.int += v.scale === into.scale ? v.int : v.int * 10n ** BigInt(into.scale - v.scale)
  }
}

const accString = (a: Acc): string => {
  if (a.scale === 0) return a.int.toString()
  const neg = a.int < 0n
  const digits = (neg ? -a.int : a.int).toString().padStart(a.scale + 1, "0")
  const text = `${neg ? "-" : ""}${digits.slice(0, digits.length - a.scale)}.${digits.slice(digits.length - a.scale)}`
  return Decimal.normalize(text)
}

export class EmulatorState {
  readonly accountId: string
  private readonly customers = new Map<string, CustomerEntry>()
  private readonly customerOrder: Array<string> = []
  private readonly meters = new Map<string, { meter: Meter; index: number }>()
  private readonly meterOrder: Array<string> = []
  private readonly activeMeterByEvent = new Map<string, string>()
  /** identifier → acceptance time (ms); insertion order = acceptance order, so pruning is O(1) amortised. */
  private readonly identifiers = new Map<string, number>()
  private readonly events: Array<MeterEventRecord> = []
  private readonly totals = new Map<string, { customer: string; eventName: string; sum: Acc; count: number }>()
  private readonly pairs = new Map<string, Map<string, Array<Counted>>>()
  private readonly preAggregated = new Map<string, Counted>()
  private readonly sessions = new Map<string, { session: MeterEventSession; expiresAtMs: number }>()
  private readonly streamErrorsList: Array<StreamEventError> = []
  private seq = 0
  duplicatesIgnored = 0
  private readonly receivedList: Array<ReceivedMeterEvent> = []

  constructor(readonly livemode: boolean) {
    this.accountId = stripeId("acct", 16)
  }

  // ---------------------------------------------------------------- customers

  createCustomer(params: FormObject | CustomerParams, nowMs: number): Customer {
    const p = params as FormObject
    const created = Math.floor(nowMs / 1000)
    const customer: Customer = {
      id: stripeId("cus", 14),
      object: "customer",
      address: null,
      balance: 0,
      created,
      currency: null,
      default_source: null,
      delinquent: false,
      description: optionalString(p.description, "description") ?? null,
      discount: null,
      email: optionalString(p.email, "email") ?? null,
      invoice_prefix: randomToken(8).toUpperCase(),
      invoice_settings: { custom_fields: null, default_payment_method: null, footer: null, rendering_options: null },
      livemode: this.livemode,
      metadata: readMetadata(p.metadata, undefined),
      name: optionalString(p.name, "name") ?? null,
      next_invoice_sequence: 1,
      phone: optionalString(p.phone, "phone") ?? null,
      preferred_locales: [],
      shipping: null,
      tax_exempt: "none",
      test_clock: null
    }
    this.customers.set(customer.id, { customer, deleted: false, index: this.customerOrder.length })
    this.customerOrder.push(customer.id)
    return customer
  }

  /** A live customer, or a deleted stub (Stripe answers retrieve on a deleted customer with it). */
  retrieveCustomer(id: string): Customer | DeletedCustomer {
    const entry = this.customers.get(id)
    if (!entry) throw noSuch("customer", id)
    return entry.deleted ? { id, object: "customer", deleted: true } : entry.customer
  }

  liveCustomer(id: string): Customer | undefined {
    const entry = this.customers.get(id)
    return entry && !entry.deleted ? entry.customer : undefined
  }

  /** Returns the updated customer and the fields whose values changed (Stripe's previous_attributes). */
  updateCustomer(
    id: string,
    params: FormObject | CustomerParams
  ): { readonly customer: Customer; readonly previous: Record<string, unknown> } {
    const entry = this.customers.get(id)
    if (!entry || entry.deleted) throw noSuch("customer", id)
    const p = params as FormObject
    const before = entry.customer
    const patch: Record<string, unknown> = {}
    for (const field of ["name", "email", "description", "phone"] as const) {
      const v = optionalString(p[field], field)
      if (v !== undefined) patch[field] = v
    }
    if (p.metadata !== undefined) patch.metadata = readMetadata(p.metadata, before.metadata)
    const after = { ...before, ...patch } as Customer
    const previous: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(patch)) {
      const old = (before as unknown as Record<string, unknown>)[k]
      if (k === "metadata") {
        const oldMeta = old as Metadata
        const newMeta = v as Metadata
        const diff: Record<string, string | null> = {}
        for (const key of new Set([...Object.keys(oldMeta), ...Object.keys(newMeta)])) {
          if (oldMeta[key] !== newMeta[key]) diff[key] = oldMeta[key] ?? null
        }
        if (Object.keys(diff).length > 0) previous.metadata = diff
      } else if (old !== v) {
        previous[k] = old
      }
    }
    entry.customer = after
    return { customer: after, previous }
  }

  deleteCustomer(id: string): { readonly deleted: DeletedCustomer; readonly customer: Customer } {
    const entry = this.customers.get(id)
    if (!entry || entry.deleted) throw noSuch("customer", id)
    entry.deleted = true
    return { deleted: { id, object: "customer", deleted: true }, customer: entry.customer }
  }

  listCustomers(params: ListParams & { readonly email?: string | undefined }): Page<Customer> {
    const email = params.email
    return paginate(
      this.customerOrder,
      (id) => this.customers.get(id)?.index,
      (id) => {
        const e = this.customers.get(id)
        if (!e || e.deleted) return undefined
        if (email !== undefined && e.customer.email !== email) return undefined
        return e.customer
      },
      params,
      "customer"
    )
  }

  allCustomers(): ReadonlyArray<Customer> {
    const out: Array<Customer> = []
    for (const id of this.customerOrder) {
      const e = this.customers.get(id)!
      if (!e.deleted) out.push(e.customer)
    }
    return out
  }

  // ---------------------------------------------------------------- meters

  createMeter(params: FormObject | MeterParams, nowMs: number): Meter {
    const p = params as FormObject
    const displayName = p.display_name
    if (typeof displayName !== "string" || displayName === "") throw missingParam("display_name")
    const eventName = p.event_name
    if (typeof eventName !== "string" || eventName === "") throw missingParam("event_name")
    if (eventName.length > 100) throw invalidParam("event_name", "event_name must be at most 100 characters.")
    const aggregation = p.default_aggregation as FormObject | undefined
    const formula = aggregation?.formula
    if (formula === undefined) throw missingParam("default_aggregation[formula]")
    if (formula !== "sum" && formula !== "count" && formula !== "last") {
      throw invalidParam(
        "default_aggregation[formula]",
        `Invalid default_aggregation[formula]: must be one of count, last, or sum`
      )
    }
    if (this.activeMeterByEvent.has(eventName)) {
      throw invalidRequest(`An active meter with event_name \`${eventName}\` already exists.`, {
        code: "resource_already_exists",
        param: "event_name"
      })
    }
    const mapping = p.customer_mapping as FormObject | undefined
    const mappingType = mapping?.type ?? "by_id"
    if (mappingType !== "by_id") throw invalidParam("customer_mapping[type]", "customer_mapping[type] must be by_id")
    const customerKey = mapping?.event_payload_key ?? "stripe_customer_id"
    const valueKey = (p.value_settings as FormObject | undefined)?.event_payload_key ?? "value"
    if (typeof customerKey !== "string" || typeof valueKey !== "string") {
      throw invalidParam("customer_mapping[event_payload_key]", "Invalid payload key")
    }
    const windowParam = p.event_time_window
    if (windowParam !== undefined && windowParam !== "day" && windowParam !== "hour") {
      throw invalidParam("event_time_window", "Invalid event_time_window: must be one of day or hour")
    }
    const created = Math.floor(nowMs / 1000)
    const meter: Meter = {
      id: stripeId("mtr", 24),
      object: "billing.meter",
      created,
      customer_mapping: { event_payload_key: customerKey, type: "by_id" },
      default_aggregation: { formula },
      display_name: displayName,
      event_name: eventName,
      event_time_window: windowParam === "day" || windowParam === "hour" ? windowParam : null,
      livemode: this.livemode,
      status: "active",
      status_transitions: { deactivated_at: null },
      updated: created,
      value_settings: { event_payload_key: valueKey }
    }
    this.meters.set(meter.id, { meter, index: this.meterOrder.length })
    this.meterOrder.push(meter.id)
    this.activeMeterByEvent.set(eventName, meter.id)
    return meter
  }

  retrieveMeter(id: string): Meter {
    const e = this.meters.get(id)
    if (!e) throw noSuch("billing.meter", id)
    return e.meter
  }

  updateMeter(id: string, params: FormObject, nowMs: number): Meter {
    const e = this.meters.get(id)
    if (!e) throw noSuch("billing.meter", id)
    const name = params.display_name
    if (name !== undefined && (typeof name !== "string" || name === "")) {
      throw invalidParam("display_name", "Invalid display_name")
    }
    e.meter = { ...e.meter, display_name: name ?? e.meter.display_name, updated: Math.floor(nowMs / 1000) }
    return e.meter
  }

  setMeterStatus(id: string, status: "active" | "inactive", nowMs: number): Meter {
    const e = this.meters.get(id)
    if (!e) throw noSuch("billing.meter", id)
    const now = Math.floor(nowMs / 1000)
    if (status === "inactive") {
      if (e.meter.status === "inactive") throw invalidRequest(`Meter ${id} is already inactive.`)
      if (this.activeMeterByEvent.get(e.meter.event_name) === id) this.activeMeterByEvent.delete(e.meter.event_name)
      e.meter = { ...e.meter, status, status_transitions: { deactivated_at: now }, updated: now }
    } else {
      if (e.meter.status === "active") throw invalidRequest(`Meter ${id} is already active.`)
      if (this.activeMeterByEvent.has(e.meter.event_name)) {
        throw invalidRequest(`An active meter with event_name \`${e.meter.event_name}\` already exists.`, {
          code: "resource_already_exists"
        })
      }
      this.activeMeterByEvent.set(e.meter.event_name, id)
      e.meter = { ...e.meter, status, status_transitions: { deactivated_at: null }, updated: now }
    }
    return e.meter
  }

  listMeters(params: ListParams & { readonly status?: string | undefined }): Page<Meter> {
    return paginate(
      this.meterOrder,
      (id) => this.meters.get(id)?.index,
      (id) => {
        const m = this.meters.get(id)?.meter
        if (!m || (params.status !== undefined && m.status !== params.status)) return undefined
        return m
      },
      params,
      "billing.meter"
    )
  }

  allMeters(): ReadonlyArray<Meter> {
    return this.meterOrder.map((id) => this.meters.get(id)!.meter)
  }

  // ---------------------------------------------------------------- meter events

  private pruneIdentifiers(nowMs: number): void {
    for (const [id, at] of this.identifiers) {
      if (nowMs - at < DEDUP_WINDOW_MS) break
      this.identifiers.delete(id)
    }
  }

  /** `${meter}|${customer}` a v1 meter event form body is about (best effort, before validation). */
  pairKey(body: FormObject): string | undefined {
    const eventName = body.event_name
    const payload = body.payload
    if (typeof eventName !== "string" || typeof payload !== "object" || payload === null || Array.isArray(payload)) {
      return undefined
    }
    const meterId = this.activeMeterByEvent.get(eventName)
    const key = meterId ? this.meters.get(meterId)!.meter.customer_mapping.event_payload_key : "stripe_customer_id"
    const customer = (payload as FormObject)[key]
    return typeof customer === "string" ? `${meterId ?? eventName}|${customer}` : undefined
  }

  /** Logs a valid event as received (see `ReceivedMeterEvent`). */
  recordReceived(r: MeterEventRecord, outcome: ReceivedMeterEvent["outcome"], atMs: number): void {
    this.receivedList.push({ identifier: r.identifier, customer: r.customer, eventName: r.eventName, value: r.value, via: r.via, outcome, atMs })
  }

  received(): ReadonlyArray<ReceivedMeterEvent> {
    return this.receivedList
  }

  /** True when `identifier` was accepted within the last 24 hours. */
  isDuplicate(identifier: string, nowMs: number): boolean {
    const at = this.identifiers.get(identifier)
    return at !== undefined && nowMs - at < DEDUP_WINDOW_MS
  }

  /**
   * Validates an event as Stripe does (meter, customer, value, timestamp, identifier) and returns
   * the record to commit; throws a StripeEmulatorError for the first broken rule.
   */
  validateMeterEvent(input: MeterEventInput, nowMs: number, via: "v1" | "v2"): MeterEventRecord {
    const eventName = input.event_name
    if (eventName === undefined || eventName === "") throw missingParam("event_name")
    const payload = input.payload
    if (payload === undefined) throw missingParam("payload")
    for (const [k, v] of Object.entries(payload)) {
      if (typeof v !== "string") throw invalidParam(`payload[${k}]`, `Invalid payload[${k}]: payload values must be strings`)
    }
    const stringPayload = payload as Readonly<Record<string, string>>
    const identifier = input.identifier ?? stripeId("mev", 20)
    if (identifier.length === 0 || identifier.length > 100) {
      throw invalidParam("identifier", "identifier must be between 1 and 100 characters.")
    }
    const meterId = this.activeMeterByEvent.get(eventName)
    if (meterId === undefined) {
      throw invalidRequest(`No active meter was found matching event_name \`${eventName}\`.`, {
        code: "resource_missing",
        param: "event_name",
        // A deactivated meter's events are reported as `archived_meter`; a name no meter has
        // raises `v1.billing.meter.no_meter_found` instead (https://docs.stripe.com/api/v2/core/events/event-types).
        asyncCode: this.anyMeterByEventName(eventName) ? "archived_meter" : "no_meter"
      })
    }
    const meter = this.meters.get(meterId)!.meter
    const customerKey = meter.customer_mapping.event_payload_key
    const customer = stringPayload[customerKey]
    if (customer === undefined || customer === "") {
      throw invalidRequest(`Missing customer mapping key \`${customerKey}\` in payload.`, {
        code: "parameter_missing",
        param: `payload[${customerKey}]`,
        asyncCode: "meter_event_no_customer_defined"
      })
    }
    if (this.liveCustomer(customer) === undefined) {
      throw invalidRequest(`No such customer: '${customer}'`, {
        code: "resource_missing",
        param: `payload[${customerKey}]`,
        asyncCode: "meter_event_customer_not_found"
      })
    }
    const valueKey = meter.value_settings.event_payload_key
    const rawValue = stringPayload[valueKey]
    let value = "0"
    if (rawValue === undefined) {
      if (meter.default_aggregation.formula !== "count") {
        throw invalidRequest(`Missing value key \`${valueKey}\` in payload.`, {
          code: "parameter_missing",
          param: `payload[${valueKey}]`,
          asyncCode: "meter_event_value_not_found"
        })
      }
    } else {
      const param = `payload[${valueKey}]`
      // Numeric strings only, in plain notation; negative values are summed (they correct usage).
      if (!isNumericString(rawValue)) {
        throw invalidRequest(`Invalid value \`${rawValue}\`: must be a numeric string.`, {
          code: "meter_event_invalid_value",
          param,
          asyncCode: "meter_event_invalid_value"
        })
      }
      if (countSignificantDigits(rawValue) > MAX_SIGNIFICANT_DIGITS) {
        throw invalidRequest(`Invalid value \`${rawValue}\`: at most 15 significant digits are supported.`, {
          code: "meter_event_value_too_many_digits",
          param,
          asyncCode: "meter_event_value_too_many_digits"
        })
      }
      value = Decimal.normalize(rawValue)
    }
    const nowSec = Math.floor(nowMs / 1000)
    const timestamp = input.timestamp ?? nowSec
    if (timestamp < nowSec - MAX_PAST_SECONDS) {
      throw invalidRequest(`Timestamp ${timestamp} is too far in the past: it must be within the past 35 days.`, {
        code: "timestamp_too_far_in_past",
        param: "timestamp",
        asyncCode: "timestamp_too_far_in_past"
      })
    }
    if (timestamp > nowSec + MAX_FUTURE_SECONDS) {
      throw invalidRequest(`Timestamp ${timestamp} is too far in the future: at most 5 minutes ahead is allowed.`, {
        code: "timestamp_in_future",
        param: "timestamp",
        asyncCode: "timestamp_in_future"
      })
    }
    return {
      identifier,
      eventName,
      meterId,
      customer,
      value,
      timestamp,
      acceptedAtMs: nowMs,
      via,
      payload: { ...stringPayload }
    }
  }

  /** The newest meter (active or not) with this event name, if any. */
  anyMeterByEventName(eventName: string): Meter | undefined {
    for (let i = this.meterOrder.length - 1; i >= 0; i--) {
      const m = this.meters.get(this.meterOrder[i]!)!.meter
      if (m.event_name === eventName) return m
    }
    return undefined
  }

  /**
   * Records an accepted event: dedup map, exact totals and the per (meter, customer) list the
   * summaries read.
   *
   * Pre-aggregated meters (`event_time_window` hour|day): Stripe keeps only the most recently
   * received event per customer per hour/day; a newer one replaces it
   * (https://docs.stripe.com/api/billing/meter/create#create_billing_meter-event_time_window,
   * "the time window which meter events have been pre-aggregated for"). The replaced event stops
   * counting in totals and summaries.
   */
  commitMeterEvent(record: MeterEventRecord): void {
    this.pruneIdentifiers(record.acceptedAtMs)
    // Re-insert so the Map's order stays acceptance order (pruning walks from the front).
    this.identifiers.delete(record.identifier)
    this.identifiers.set(record.identifier, record.acceptedAtMs)
    this.events.push(record)
    const key = `${record.customer}\u0000${record.eventName}`
    const v = accOf(record.value)
    let t = this.totals.get(key)
    if (!t) {
      t = { customer: record.customer, eventName: record.eventName, sum: { int: 0n, scale: 0 }, count: 0 }
      this.totals.set(key, t)
    }
    let byCustomer = this.pairs.get(record.meterId)
    if (!byCustomer) {
      byCustomer = new Map()
      this.pairs.set(record.meterId, byCustomer)
    }
    let list = byCustomer.get(record.customer)
    if (!list) {
      list = []
      byCustomer.set(record.customer, list)
    }
    const entry: Counted = {
      timestamp: record.timestamp,
      value: record.value,
      double: Number(record.value),
      acceptedAtMs: record.acceptedAtMs,
      seq: ++this.seq,
      replaced: false
    }
    const window = this.meters.get(record.meterId)!.meter.event_time_window
    if (window !== null) {
      const size = window === "hour" ? 3600 : 86400
      const slot = `${record.meterId}|${record.customer}|${Math.floor(record.timestamp / size)}`
      const previous = this.preAggregated.get(slot)
      if (previous) {
        previous.replaced = true
        const p = accOf(previous.value)
        accAdd(t.sum, { int: -p.int, scale: p.scale })
        t.count -= 1
      }
      this.preAggregated.set(slot, entry)
    }
    accAdd(t.sum, v)
    t.count += 1
    list.push(entry)
  }

  toMeterEvent(record: MeterEventRecord): MeterEvent {
    return {
      object: "billing.meter_event",
      created: Math.floor(record.acceptedAtMs / 1000),
      event_name: record.eventName,
      identifier: record.identifier,
      livemode: this.livemode,
      payload: record.payload,
      timestamp: record.timestamp
    }
  }

  recordStreamError(error: StreamEventError): void {
    this.streamErrorsList.push(error)
  }

  streamErrors(): ReadonlyArray<StreamEventError> {
    return this.streamErrorsList
  }

  meterEvents(): ReadonlyArray<MeterEventRecord> {
    return this.events
  }

  totalsList(): ReadonlyArray<Totals> {
    return Array.from(this.totals.values(), (t) => ({
      customer: t.customer,
      eventName: t.eventName,
      sum: accString(t.sum),
      count: t.count
    }))
  }

  /**
   * Event summaries for one meter and customer over [start, end), newest bucket first.
   *
   * As Stripe computes them: `aggregated_value` is a float (the OpenAPI type is `number`, and the
   * SDKs type it as a double), so values are summed as IEEE doubles in the order they were
   * received (0.1 + 0.2 → 0.30000000000000004); and meter events are aggregated asynchronously, so
   * an event shows only once `visibleBeforeMs` has passed its acceptance
   * (https://docs.stripe.com/api/billing/meter-event-summary/object: "meter event summaries
   * provide an eventually consistent view of the reported usage").
   */
  summaries(params: {
    readonly meterId: string
    readonly customer: string
    readonly start: number
    readonly end: number
    readonly grouping: "hour" | "day" | undefined
    /** Events accepted at or after this instant (ms) are not aggregated yet. */
    readonly visibleBeforeMs: number
  }): ReadonlyArray<SummaryBucket> {
    const { start, end, grouping } = params
    const meter = this.retrieveMeter(params.meterId)
    const formula = meter.default_aggregation.formula
    const list = this.pairs.get(params.meterId)?.get(params.customer) ?? []
    const size = grouping === "hour" ? 3600 : grouping === "day" ? 86400 : undefined
    const acc = new Map<number, { sum: number; count: number; last: Counted | undefined }>()
    for (const e of list) {
      if (e.replaced || e.acceptedAtMs > params.visibleBeforeMs) continue
      if (e.timestamp < start || e.timestamp >= end) continue
      const bucket = size === undefined ? start : Math.floor(e.timestamp / size) * size
      let cur = acc.get(bucket)
      if (!cur) {
        cur = { sum: 0, count: 0, last: undefined }
        acc.set(bucket, cur)
      }
      cur.sum += e.double
      cur.count += 1
      if (!cur.last || e.timestamp >= cur.last.timestamp) cur.last = e
    }
    if (size === undefined && acc.size === 0) return [{ start, end, value: 0 }]
    const value = (a: { sum: number; count: number; last: Counted | undefined }): number =>
      formula === "sum" ? a.sum : formula === "count" ? a.count : (a.last?.double ?? 0)
    return Array.from(acc.entries())
      .sort((x, y) => y[0] - x[0])
      .map(([bucket, a]) => ({ start: bucket, end: size === undefined ? end : bucket + size, value: value(a) }))
  }

  // ---------------------------------------------------------------- v2 sessions

  createSession(nowMs: number): MeterEventSession {
    for (const [token, s] of this.sessions) {
      if (s.expiresAtMs <= nowMs) this.sessions.delete(token)
    }
    const expiresAtMs = nowMs + SESSION_TTL_MS
    const session: MeterEventSession = {
      id: stripeId("mes", 24),
      object: "v2.billing.meter_event_session",
      authentication_token: stripeId("mest", 40),
      created: iso(nowMs),
      expires_at: iso(expiresAtMs),
      livemode: this.livemode
    }
    this.sessions.set(session.authentication_token, { session, expiresAtMs })
    return session
  }

  /** "valid", "expired" (known but past its expiry) or "unknown". */
  checkSession(token: string, nowMs: number): "valid" | "expired" | "unknown" {
    const s = this.sessions.get(token)
    if (!s) return "unknown"
    return s.expiresAtMs > nowMs ? "valid" : "expired"
  }

  /** Fault injection: every session issued so far is expired from now on. */
  expireAllSessions(nowMs: number): number {
    let n = 0
    for (const s of this.sessions.values()) {
      if (s.expiresAtMs > nowMs) {
        s.expiresAtMs = nowMs
        n++
      }
    }
    return n
  }
}

export { StripeEmulatorError }

/**
 * Meter events of the emulated account: validation as Stripe documents it, the 24-hour identifier
 * dedup, exact totals, pre-aggregated meters, and the event summaries Stripe computes from them.
 */
import * as Decimal from "../../domain/Decimal.js"
import { countSignificantDigits, isNumericString } from "../digits.js"
import { invalidParam, invalidRequest, missingParam } from "../errors.js"
import type { FormObject } from "../form.js"
import type { Customers } from "./customers.js"
import type { Meters } from "./meters.js"
import {
  type Counted,
  DEDUP_WINDOW_MS,
  MAX_FUTURE_SECONDS,
  MAX_PAST_SECONDS,
  MAX_SIGNIFICANT_DIGITS,
  type MeterEvent,
  type MeterEventInput,
  type MeterEventRecord,
  type ReceivedMeterEvent,
  type StreamEventError,
  stripeId,
  type SummaryBucket,
  type Totals
} from "./model.js"
import { type Acc, accAdd, accOf, accString } from "./sums.js"

export class MeterEvents {
  private readonly identifiers = new Map<string, number>()
  private readonly events: Array<MeterEventRecord> = []
  private readonly totals = new Map<string, { customer: string; eventName: string; sum: Acc; count: number }>()
  private readonly pairs = new Map<string, Map<string, Array<Counted>>>()
  private readonly preAggregated = new Map<string, Counted>()
  private readonly streamErrorsList: Array<StreamEventError> = []
  private readonly receivedList: Array<ReceivedMeterEvent> = []
  private seq = 0
  duplicatesIgnored = 0

  constructor(
    private readonly livemode: boolean,
    private readonly meters: Meters,
    private readonly customers: Customers
  ) {}

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
    const meter = this.meters.active(eventName)
    const key = meter ? meter.customer_mapping.event_payload_key : "stripe_customer_id"
    const customer = (payload as FormObject)[key]
    return typeof customer === "string" ? `${meter?.id ?? eventName}|${customer}` : undefined
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
  validate(input: MeterEventInput, nowMs: number, via: "v1" | "v2"): MeterEventRecord {
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
    const meter = this.meters.active(eventName)
    if (meter === undefined) {
      throw invalidRequest(`No active meter was found matching event_name \`${eventName}\`.`, {
        code: "resource_missing",
        param: "event_name",
        // A deactivated meter's events are reported as `archived_meter`; a name no meter has
        // raises `v1.billing.meter.no_meter_found` instead (https://docs.stripe.com/api/v2/core/events/event-types).
        asyncCode: this.meters.anyByEventName(eventName) ? "archived_meter" : "no_meter"
      })
    }
    const meterId = meter.id
    const customerKey = meter.customer_mapping.event_payload_key
    const customer = stringPayload[customerKey]
    if (customer === undefined || customer === "") {
      throw invalidRequest(`Missing customer mapping key \`${customerKey}\` in payload.`, {
        code: "parameter_missing",
        param: `payload[${customerKey}]`,
        asyncCode: "meter_event_no_customer_defined"
      })
    }
    if (this.customers.live(customer) === undefined) {
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
  commit(record: MeterEventRecord): void {
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
    const window = this.meters.retrieve(record.meterId).event_time_window
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

  all(): ReadonlyArray<MeterEventRecord> {
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
    const meter = this.meters.retrieve(params.meterId)
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

}

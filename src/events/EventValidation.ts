/**
 * Validation and metering of one raw event, pure functions (no database): what the ingestor
 * checks before anything is stored, and the processed rows an event makes for its meters.
 */
import { newId } from "../domain/Ids.js"
import { textProblem } from "../domain/Text.js"
import * as Decimal from "../domain/Decimal.js"
import { isJsonObject, JsonNumber, type JsonValue } from "../domain/Json.js"
import { matches, quantityFor, type MeterRule } from "../domain/Metering.js"
import type { IngestRejection } from "../domain/Models.js"
import type { ProcessedEvent } from "./EventStore.js"

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$/

export interface ValidEvent {
  readonly index: number
  readonly eventId: string
  readonly eventName: string
  readonly externalCustomerId: string
  readonly timestamp: Date
  readonly properties: Readonly<Record<string, JsonValue>>
}

const str = (v: unknown, max = 255): string | undefined =>
  typeof v === "string" && v.length > 0 && v.length <= max ? v : undefined

/**
 * Event times the stores can hold and a bill can mean: PostgreSQL refuses year 0000 (a data
 * error that failed the whole bulk with 503) and ClickHouse DateTime ends in 2106.
 */
export const MIN_EVENT_TIME = Date.UTC(1970, 0, 1)
export const MAX_EVENT_TIME = Date.UTC(2100, 0, 1)

/**
 * The path of the first number literal beyond the Decimal literal bounds, anywhere in the
 * properties: such a literal is refused before it is stored, so no later reader (the pending
 * sweep, a meter created afterwards) ever has to expand it.
 */
export const outOfRangeNumber = (v: JsonValue, path: string): string | null => {
  if (v instanceof JsonNumber) return Decimal.checkLiteral(v.raw) === "ok" ? null : path
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = outOfRangeNumber(v[i] as JsonValue, `${path}[${i}]`)
      if (p !== null) return p
    }
    return null
  }
  if (isJsonObject(v))
    for (const k of Object.keys(v)) {
      const p = outOfRangeNumber(v[k] as JsonValue, `${path}.${k}`)
      if (p !== null) return p
    }
  return null
}

/** Validate one raw event (already parsed with exact numbers). */
export const validateEvent = (
  raw: unknown,
  index: number,
  now: Date,
  /** A timestamp later than `now` + this is refused (`timestamp_in_future`); see IngestConfig. */
  maxFutureMs: number = Number.POSITIVE_INFINITY
): { readonly _tag: "Valid"; readonly event: ValidEvent } | { readonly _tag: "Rejected"; readonly rejection: IngestRejection } => {
  const reject = (code: string, reason: string, eventId: string | null = null) =>
    ({ _tag: "Rejected", rejection: { index, event_id: eventId, code, reason } }) as const
  if (!isJsonObject(raw)) return reject("invalid_event", "event must be a JSON object")
  const eventIdRaw = raw["event_id"]
  if (eventIdRaw !== undefined && eventIdRaw !== null && str(eventIdRaw) === undefined)
    return reject("invalid_event_id", "event_id must be a non-empty string of at most 255 characters")
  const eventId = (eventIdRaw as string | undefined | null) ?? newId.event()
  for (const field of ["event_id", "event_name", "external_customer_id"] as const) {
    const v = raw[field]
    const problem = typeof v === "string" ? textProblem(v) : null
    if (problem !== null) return reject("invalid_text", `${field} ${problem}`, field === "event_id" ? null : eventId)
  }
  const eventName = str(raw["event_name"])
  if (!eventName) return reject("invalid_event_name", "event_name is required (a non-empty string)", eventId)
  const externalCustomerId = str(raw["external_customer_id"])
  if (!externalCustomerId)
    return reject("invalid_external_customer_id", "external_customer_id is required (a non-empty string)", eventId)
  let timestamp = now
  const ts = raw["timestamp"]
  if (ts !== undefined && ts !== null) {
    if (typeof ts !== "string" || !RFC3339.test(ts)) return reject("invalid_timestamp", "timestamp must be an RFC 3339 date-time", eventId)
    timestamp = new Date(ts)
    if (Number.isNaN(timestamp.getTime())) return reject("invalid_timestamp", "timestamp must be an RFC 3339 date-time", eventId)
    if (timestamp.getTime() < MIN_EVENT_TIME || timestamp.getTime() >= MAX_EVENT_TIME)
      return reject("timestamp_out_of_range", "timestamp must be between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z", eventId)
    if (timestamp.getTime() > now.getTime() + maxFutureMs)
      return reject(
        "timestamp_in_future",
        `timestamp is more than ${maxFutureMs / 1000} s ahead of the server clock (${now.toISOString()}); Stripe refuses usage more than 5 minutes in the future`,
        eventId
      )
  }
  const props = raw["properties"] ?? {}
  if (!isJsonObject(props)) return reject("invalid_properties", "properties must be a JSON object", eventId)
  const hostile = outOfRangeNumber(props, "properties")
  if (hostile !== null)
    return reject(
      "number_out_of_range",
      `${hostile.slice(0, 200)}: a number has at most ${Decimal.MAX_LITERAL_DIGITS} digits and an exponent within ±${Decimal.MAX_EXPONENT}`,
      eventId
    )
  return { _tag: "Valid", event: { index, eventId, eventName, externalCustomerId, timestamp, properties: props } }
}

/** What an event's meters make of it: quantities, processing errors, and a quantity no column holds. */
export interface Metered {
  readonly quantities: ReadonlyArray<{ readonly meterId: string; readonly qty: string }>
  /** Every matching meter's processing error ("meter m: reason; …"), or null. */
  readonly error: string | null
  /**
   * The first error that is a quantity numeric(38,12) cannot hold: the ingestor refuses such an
   * event (`quantity_out_of_range`) whether or not its customer exists yet, rather than storing
   * an event that can never be billed.
   */
  readonly outOfRange: string | null
}

/** The quantity of an event for each meter it matches, and the errors of those that fail. */
export const meterQuantities = (
  meters: ReadonlyArray<MeterRule>,
  e: { readonly eventName: string; readonly properties: Readonly<Record<string, JsonValue>> }
): Metered => {
  const quantities: Array<{ meterId: string; qty: string }> = []
  const errors: Array<string> = []
  let outOfRange: string | null = null
  for (const m of meters) {
    if (!matches(m, e.eventName, e.properties)) continue
    const q = quantityFor(m, e.properties)
    if (q._tag === "Ok") quantities.push({ meterId: m.id, qty: q.qty })
    else {
      const reason = `meter ${m.id}: ${q.reason}`
      errors.push(reason)
      if (q.outOfRange && outOfRange === null) outOfRange = reason
    }
  }
  return { quantities, error: errors.length > 0 ? errors.join("; ") : null, outOfRange }
}

/** The processed rows of one event of a known customer, from its metered quantities. */
export const processedRows = (
  e: { readonly eventId: string; readonly eventName: string; readonly timestamp: Date },
  metered: Metered,
  row: { readonly scope: { tenantId: string; environmentId: string }; readonly customerId: string; readonly ingestedAt: Date }
): ReadonlyArray<ProcessedEvent> =>
  metered.quantities.map(({ meterId, qty }) => ({
    tenantId: row.scope.tenantId,
    environmentId: row.scope.environmentId,
    eventId: e.eventId,
    customerId: row.customerId,
    meterId,
    eventName: e.eventName,
    timestamp: e.timestamp,
    ingestedAt: row.ingestedAt,
    qtyTotal: qty,
    qtyBillable: qty
  }))

/** The processed rows of one event of a known customer, or the processing error. */
export const processEvent = (
  meters: ReadonlyArray<MeterRule>,
  e: { eventId: string; eventName: string; timestamp: Date; properties: Readonly<Record<string, JsonValue>> },
  row: { readonly scope: { tenantId: string; environmentId: string }; readonly customerId: string; readonly ingestedAt: Date }
): { readonly rows: ReadonlyArray<ProcessedEvent>; readonly error: string | null } => {
  const metered = meterQuantities(meters, e)
  return { rows: processedRows(e, metered, row), error: metered.error }
}

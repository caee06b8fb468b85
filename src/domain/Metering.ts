/**
 * Turning one raw event into billable quantities, per matching meter. Pure: no I/O.
 * COUNT → 1; SUM/MAX/LATEST → the exact decimal of the meter's field. A missing or non-numeric
 * field is a processing error, never a silent zero.
 */
import * as Decimal from "./Decimal.js"
import { JsonNumber, type JsonValue } from "./Json.js"
import type { AggregationType, MeterFilter } from "./Models.js"

export interface MeterRule {
  readonly id: string
  readonly eventName: string
  readonly aggregationType: AggregationType
  readonly aggregationField: string | null
  readonly filters: ReadonlyArray<MeterFilter>
}

export type Quantity =
  | { readonly _tag: "Ok"; readonly meterId: string; readonly qty: string }
  | { readonly _tag: "Error"; readonly meterId: string; readonly reason: string; readonly outOfRange: boolean }

/** numeric(38,12): at most 26 digits before the point and 12 after. */
const fitsColumn = (d: string): boolean => {
  const n = d.replace("-", "")
  const [ip = "", fp = ""] = n.split(".")
  return ip.length <= 26 && fp.length <= 12
}

/**
 * A literal already canonical (Decimal.normalize's form) and within numeric(38,12): no leading
 * zero, no trailing fractional zero, no "-0". It is its own normal form, so the common quantity
 * ("12.25", "3") skips the BigDecimal parse and format, the largest per-event cost of ingest.
 */
const CANONICAL_IN_COLUMN = /^(?!-0$)-?(?:0|[1-9]\d{0,25})(?:\.\d{0,11}[1-9])?$/

const scalarText = (v: JsonValue | undefined): string | undefined =>
  v instanceof JsonNumber ? v.raw : typeof v === "string" ? v : typeof v === "boolean" ? String(v) : undefined

export const matches = (meter: MeterRule, eventName: string, properties: Readonly<Record<string, JsonValue>>): boolean =>
  meter.eventName === eventName &&
  meter.filters.every((f) => {
    const v = scalarText(properties[f.key])
    return v !== undefined && f.values.includes(v)
  })

export const quantityFor = (meter: MeterRule, properties: Readonly<Record<string, JsonValue>>): Quantity => {
  if (meter.aggregationType === "COUNT") return { _tag: "Ok", meterId: meter.id, qty: "1" }
  const field = meter.aggregationField ?? ""
  const raw = properties[field]
  const error = (reason: string, outOfRange = false): Quantity => ({ _tag: "Error", meterId: meter.id, reason, outOfRange })
  if (raw === undefined || raw === null) return error(`property ${field} is missing`)
  const text = raw instanceof JsonNumber ? raw.raw : typeof raw === "string" ? raw.trim() : undefined
  if (text === undefined) return error(`property ${field} is not numeric`)
  if (CANONICAL_IN_COLUMN.test(text)) return { _tag: "Ok", meterId: meter.id, qty: text }
  // bounded on the literal's text first: normalising an unbounded exponent is what would cost
  const check = Decimal.checkLiteral(text)
  if (check === "syntax") return error(`property ${field} is not numeric`)
  const range = `property ${field} is out of range (at most 26 integer and 12 fractional digits)`
  if (check === "range") return error(range, true)
  const qty = Decimal.normalize(text)
  if (!fitsColumn(qty)) return error(range, true)
  return { _tag: "Ok", meterId: meter.id, qty }
}

/**
 * An event's quantity for a SUM meter, against the BigInt oracle: every accepted spelling of a
 * value (canonical, padded, exponent; JSON number or string) gives the oracle's canonical text
 * when numeric(38,12) holds it, and an out-of-range error when it does not. Canonical literals
 * take Metering's fast path, the others Decimal's parse and format; both must agree with the oracle.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { JsonNumber } from "../../src/domain/Json.js"
import { quantityFor, type MeterRule } from "../../src/domain/Metering.js"
import { meterQuantities } from "../../src/events/EventValidation.js"
import { literalOf, runs } from "../support/arbitraries.js"
import * as O from "../support/oracle.js"

const sum: MeterRule = { id: "mtr_sum", eventName: "e", aggregationType: "SUM", aggregationField: "q", filters: [] }
const count: MeterRule = { id: "mtr_count", eventName: "e", aggregationType: "COUNT", aggregationField: null, filters: [] }

/** Whether numeric(38,12) holds the value: at most 26 integer digits and 12 fractional digits. */
const fitsColumn = (v: O.Exact): boolean => {
  const r = O.reduce(v)
  const abs = r.unscaled < 0n ? -r.unscaled : r.unscaled
  const intDigits = r.scale >= 0 ? abs / 10n ** BigInt(r.scale) : abs * 10n ** BigInt(-r.scale)
  return r.scale <= 12 && intDigits.toString().length <= 26
}

/** Values around the column's bounds: up to 28 integer digits and 14 fractional digits. */
const value = fc.record({
  unscaled: fc.oneof(
    fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }),
    fc.bigInt({ min: -(10n ** 6n), max: 10n ** 6n }),
    fc.constantFrom(0n, 1n, -1n, 10n ** 38n - 1n, -(10n ** 38n - 1n), 10n ** 38n, 10n ** 26n - 1n, 10n ** 26n)
  ),
  scale: fc.integer({ min: 0, max: 14 })
})

const spelling = (v: O.Exact) => fc.oneof(fc.constant(O.format(v)), literalOf(v))

describe("quantityFor", () => {
  it("gives the oracle's canonical text for every spelling the column holds, and out-of-range otherwise (property)", () => {
    fc.assert(
      fc.property(
        value.chain((v) => fc.tuple(fc.constant(v), spelling(v), fc.boolean())),
        ([v, text, asString]) => {
          const q = quantityFor(sum, { q: asString ? ` ${text} ` : new JsonNumber(text) })
          if (fitsColumn(v)) expect(q).toEqual({ _tag: "Ok", meterId: "mtr_sum", qty: O.format(v) })
          else expect(q).toMatchObject({ _tag: "Error", outOfRange: true })
        }
      ),
      runs(2000)
    )
  })

  it("canonical edges: zero of any sign, the column's last digits, one digit beyond", () => {
    const at = (text: string) => quantityFor(sum, { q: new JsonNumber(text) })
    expect(at("-0")).toEqual({ _tag: "Ok", meterId: "mtr_sum", qty: "0" })
    expect(at("-0.0")).toEqual({ _tag: "Ok", meterId: "mtr_sum", qty: "0" })
    expect(at("0.50")).toEqual({ _tag: "Ok", meterId: "mtr_sum", qty: "0.5" })
    expect(at("-0.000000000001")).toEqual({ _tag: "Ok", meterId: "mtr_sum", qty: "-0.000000000001" })
    expect(at("0.0000000000001")).toMatchObject({ _tag: "Error", outOfRange: true })
    expect(at("9".repeat(26))).toEqual({ _tag: "Ok", meterId: "mtr_sum", qty: "9".repeat(26) })
    expect(at("1" + "0".repeat(26))).toMatchObject({ _tag: "Error", outOfRange: true })
    expect(quantityFor(sum, { q: "12abc" })).toMatchObject({ _tag: "Error", outOfRange: false })
    expect(quantityFor(sum, {})).toMatchObject({ _tag: "Error", outOfRange: false })
  })
})

describe("meterQuantities", () => {
  it("meters an event once: quantities of the matching meters, every error, the first out-of-range one", () => {
    const other: MeterRule = { ...sum, id: "mtr_other", aggregationField: "r" }
    const ok = meterQuantities([count, sum], { eventName: "e", properties: { q: new JsonNumber("2.50") } })
    expect(ok).toEqual({ quantities: [{ meterId: "mtr_count", qty: "1" }, { meterId: "mtr_sum", qty: "2.5" }], error: null, outOfRange: null })
    const wide = "1" + "0".repeat(30)
    const bad = meterQuantities([count, sum, other], { eventName: "e", properties: { q: "x", r: new JsonNumber(wide) } })
    expect(bad.quantities).toEqual([{ meterId: "mtr_count", qty: "1" }])
    expect(bad.error).toMatch(/^meter mtr_sum: property q is not numeric; meter mtr_other: property r is out of range/)
    expect(bad.outOfRange).toMatch(/^meter mtr_other: property r is out of range/)
    expect(meterQuantities([sum], { eventName: "other", properties: {} })).toEqual({ quantities: [], error: null, outOfRange: null })
  })
})

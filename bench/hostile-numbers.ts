/**
 * Per-call cost of the event number path on hostile literals: `parseJson` of one event, then
 * `validateEvent` (the literal bound) and `quantityFor` (bound, then normalisation), as the
 * ingest runs them. Before the bound, `1e-60000` cost seconds a call; now every literal is
 * classified on its text before a digit is expanded. Prints microseconds per call.
 */
import { parseJson } from "../src/domain/Json.js"
import { quantityFor, type MeterRule } from "../src/domain/Metering.js"
import { validateEvent } from "../src/events/EventIngestor.js"
import { machine } from "./harness.js"

const meter: MeterRule = { id: "m", eventName: "x", aggregationType: "SUM", aggregationField: "q", filters: [] }
const now = new Date()
const literals = [
  "1e-60000",
  "1e999999999",
  "-1E+99999999999999999999",
  "1e-64",
  "1e64",
  "9".repeat(64),
  "9".repeat(100_000),
  `0.${"0".repeat(100_000)}1`,
  `"1e-60000"`,
  // a string quantity: a digit run then a letter (quadratic in the earlier literal regex)
  `"${"9".repeat(100_000)}x"`,
  "123.456789012345"
]

const run = (body: string): void => {
  const raw = parseJson(body)
  const v = validateEvent(raw, 0, now)
  if (v._tag === "Valid") quantityFor(meter, v.event.properties)
  else {
    // a string quantity is bounded by quantityFor itself (the ingest checks it against meters)
    const props = (raw as { properties: Record<string, never> }).properties
    quantityFor(meter, props)
  }
}

console.log(`# hostile number literals on ${machine()}`)
for (const lit of literals) {
  const body = `{"event_id":"e","event_name":"x","external_customer_id":"c","properties":{"q":${lit}}}`
  const n = lit.length > 1000 ? 200 : 20_000
  for (let i = 0; i < Math.min(n, 1000); i++) run(body) // warm-up
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) run(body)
  const us = Number(process.hrtime.bigint() - start) / 1000 / n
  const label = lit.length > 24 ? `${lit.slice(0, 12)}…(${lit.length} chars)` : lit
  console.log(`${label.padEnd(32)} ${us.toFixed(2).padStart(10)} µs/call`)
}

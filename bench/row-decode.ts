/**
 * Row decoding benchmark (not a test): the cost of decoding the ledger's batch rows with their
 * SqlSchema Result schema (src/repositories/ledger/Model.ts) against the hand-written mapping it
 * replaced (cast + `Decimal.normalize` + `Number`), over rows shaped as postgres.js returns them
 * (numeric as text, int8 as text, int4 as numbers, timestamptz as Date). Both in this process,
 * alternating round by round; median per row.
 *
 *   npx tsx bench/row-decode.ts [--rows 100000] [--rounds 7]
 */
import { Schema } from "effect"
import * as Decimal from "../src/domain/Decimal.js"
import { BatchRowSchema } from "../src/repositories/ledger/Model.js"

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}
const ROWS = arg("rows", 100_000)
const ROUNDS = arg("rounds", 7)

const t0 = new Date("2026-12-01T10:00:00Z")
const raw = Array.from({ length: ROWS }, (_, i) => ({
  id: `ssb_${i.toString(36).padStart(12, "0")}`,
  customerId: `cus_${i % 50_000}`,
  meterId: `mtr_${i % 2}`,
  eventType: "api_call",
  windowStart: t0,
  windowEnd: new Date(t0.getTime() + 3_600_000),
  sequence: 1,
  aggregatedQuantity: `${i}.${(i * 7919) % 1_000_000}000000`,
  sentQuantity: i % 3 === 0 ? null : `${i}.${(i * 7919) % 1_000_000}000000`,
  eventCount: String(1 + (i % 40)),
  identifier: `fp_${i}`,
  providerMeterId: "mtr_stripe",
  syncStatus: "pending",
  skipReason: null,
  retryCount: 0,
  errorCode: null,
  errorMessage: null,
  ingestedAfter: null,
  watermark: t0,
  firstSentAt: null,
  createdAt: t0,
  updatedAt: t0,
  syncedAt: null
}))

/** The mapping the repositories used before (Model.ts `toBatch`, main at 5bb1149). */
const handWritten = (r: (typeof raw)[number]) => ({
  ...r,
  aggregatedQuantity: Decimal.normalize(r.aggregatedQuantity),
  sentQuantity: r.sentQuantity === null ? null : Decimal.normalize(r.sentQuantity),
  eventCount: Number(r.eventCount),
  retryCount: Number(r.retryCount),
  sequence: Number(r.sequence)
})
const decodeRows = Schema.decodeUnknownSync(Schema.Array(BatchRowSchema))

const time = (f: () => unknown) => {
  const start = process.hrtime.bigint()
  f()
  return Number(process.hrtime.bigint() - start) / ROWS
}
const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

// same output first: the schema is a drop-in for the mapping
const a = raw.slice(0, 1000).map(handWritten)
const b = decodeRows(raw.slice(0, 1000))
if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error("the schema decodes differently from the hand-written mapping")

const before: Array<number> = []
const after: Array<number> = []
for (let round = 0; round < ROUNDS; round++) {
  before.push(time(() => raw.map(handWritten)))
  after.push(time(() => decodeRows(raw)))
}
const mb = median(before)
const ma = median(after)
console.log(`rows ${ROWS}, rounds ${ROUNDS}`)
console.log(`hand-written mapping: ${mb.toFixed(0)} ns/row (median)`)
console.log(`SqlSchema Result schema: ${ma.toFixed(0)} ns/row (median)`)
console.log(`after / before: ${(ma / mb).toFixed(2)}; per 100,000 rows: +${(((ma - mb) * 100_000) / 1e6).toFixed(0)} ms`)

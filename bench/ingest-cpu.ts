/**
 * The ingest path's own JavaScript per 1,000-event bulk request, no database and no HTTP: JSON
 * with exact numbers, validation, metering (2 meters, as bench/ingest.ts), the properties' JSON
 * text and the `text[]` literals of the write. With a `before` checkout (a `git worktree` at the
 * base commit) both are timed in this one process, alternately, so the figures share the machine:
 *
 *   npx tsx bench/ingest-cpu.ts [before-checkout] [rounds]
 */
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { machine } from "./harness.js"

interface Pipeline {
  readonly parseJson: (text: string) => unknown
  readonly stringifyJson: (v: unknown) => string
  readonly validateEvent: (raw: unknown, index: number, now: Date, maxFutureMs: number) => { _tag: string; event?: unknown }
  readonly meterQuantities: (meters: ReadonlyArray<unknown>, e: unknown) => unknown
  readonly quantityOutOfRange?: (meters: ReadonlyArray<unknown>, e: unknown) => unknown
  readonly textArray: (values: ReadonlyArray<string | null>) => string
}

const load = async (root: string): Promise<Pipeline> => {
  const at = (p: string) => import(pathToFileURL(path.resolve(root, p)).href)
  const json = await at("src/domain/Json.ts")
  const validation = await at("src/events/EventValidation.ts")
  const arrays = await at("src/db/SqlArrays.ts")
  return { ...json, ...validation, ...arrays } as Pipeline
}

const hour = Date.now() - 3 * 3_600_000
const body = JSON.stringify({
  events: Array.from({ length: 1000 }, (_, i) => ({
    event_id: `e-1-${i}`,
    event_name: "api_call",
    external_customer_id: `c${i}`,
    timestamp: new Date(hour + i).toISOString(),
    properties: { tokens: `${(i % 97) + 0.25}` }
  }))
})
const meters = [
  { id: "mtr_calls", eventName: "api_call", aggregationType: "COUNT", aggregationField: null, filters: [] },
  { id: "mtr_tokens", eventName: "api_call", aggregationType: "SUM", aggregationField: "tokens", filters: [] }
]

/** One request's JavaScript, as EventIngestor runs it; returns a checksum so nothing is elided. */
const request = (p: Pipeline): number => {
  const raws = (p.parseJson(body) as { events: Array<unknown> }).events
  const now = new Date()
  let n = 0
  const props: Array<string> = []
  for (let i = 0; i < raws.length; i++) {
    const v = p.validateEvent(raws[i], i, now, 300_000)
    const e = v.event as { properties: unknown }
    if (p.quantityOutOfRange !== undefined) p.quantityOutOfRange(meters, e)
    p.meterQuantities(meters, e)
    props.push(p.stringifyJson(e.properties))
    n++
  }
  return n + p.textArray(props).length
}

const timeIt = (p: Pipeline, requests: number): number => {
  const t0 = performance.now()
  let sink = 0
  for (let r = 0; r < requests; r++) sink += request(p)
  if (sink === 0) throw new Error("nothing ran")
  return (performance.now() - t0) / requests
}

const beforeDir = process.argv[2]
const rounds = Number(process.argv[3] ?? 5)
const after = await load(".")
const before = beforeDir === undefined ? undefined : await load(beforeDir)
console.log(`# ingest JavaScript per 1,000-event request on ${machine()}; load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}; ${new Date().toISOString()}`)
for (const p of [after, before]) if (p !== undefined) timeIt(p, 50) // warm-up
const runs: Record<string, Array<number>> = { after: [], before: [] }
for (let r = 0; r < rounds; r++) {
  runs["after"]!.push(timeIt(after, 200))
  if (before !== undefined) runs["before"]!.push(timeIt(before, 200))
}
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const ms = (x: number) => Number(x.toFixed(2))
console.log(JSON.stringify({ afterMs: runs["after"]!.map(ms), beforeMs: runs["before"]!.map(ms) }))
console.log(
  `# median ms per request: after ${ms(median(runs["after"]!))}` +
    (before === undefined ? "" : `, before ${ms(median(runs["before"]!))}, before ÷ after ${(median(runs["before"]!) / median(runs["after"]!)).toFixed(2)}`)
)

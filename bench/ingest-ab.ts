/**
 * Before/after of the ingest path in ONE run: this checkout's product beside another checkout's
 * (`before`, e.g. a `git worktree` at the base commit with node_modules linked), interleaved with
 * this checkout's `unnest ×4` / `unnest ×1` baselines (bench/ingest.ts), the order rotating per
 * round; medians per backend. Run:
 * `npx tsx bench/ingest-ab.ts <before-checkout> [events] [rounds]` (+ FLEXPRICE_BENCH_POSTGRES_URL).
 */
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { benchBaseline, benchIngest } from "./ingest.js"
import { machine } from "./harness.js"

type Options = Parameters<typeof benchIngest>[2]
type Result = { eventsPerSecond: number }

const beforeDir = process.argv[2]
if (beforeDir === undefined) throw new Error("usage: bench/ingest-ab.ts <before-checkout> [events] [rounds]")
const total = Number(process.argv[3] ?? 60_000)
const rounds = Number(process.argv[4] ?? 3)
const before = (await import(pathToFileURL(path.resolve(beforeDir, "bench/ingest.ts")).href)) as {
  benchIngest: (label: string, total: number, options?: Options) => Promise<Result>
}
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(" ")

console.log(`# ingest A/B on ${machine()}; before = ${path.resolve(beforeDir)}; load average ${load()}; ${new Date().toISOString()}`)
const backends: Array<{ name: string; options: Options }> = [{ name: "pglite", options: {} }]
const pgUrl = process.env["FLEXPRICE_BENCH_POSTGRES_URL"]
if (pgUrl) backends.push({ name: "postgres", options: { postgresUrl: pgUrl } })
for (const { name, options } of backends) {
  const measures: Array<[string, () => Promise<Result>]> = [
    ["before", () => before.benchIngest(`${name} before`, total, options)],
    ["after", () => benchIngest(`${name} after`, total, options)],
    ["unnest4", () => benchBaseline("unnest", `${name} unnest ×4`, total, options)],
    ["unnest1", () => benchBaseline("unnest", `${name} unnest ×1`, total, options, 1)]
  ]
  const runs: Record<string, Array<number>> = Object.fromEntries(measures.map(([k]) => [k, []]))
  for (let r = 0; r < rounds; r++)
    for (let k = 0; k < measures.length; k++) {
      const [key, run] = measures[(k + r) % measures.length]!
      runs[key]!.push((await run()).eventsPerSecond)
    }
  const m = Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, median(xs)])) as Record<string, number>
  const ratio = (a: number, b: number) => Number((a / b).toFixed(2))
  console.log(`# ${name} runs ${JSON.stringify(runs)}`)
  console.log(
    `# ${name} medians ${JSON.stringify({
      ...m,
      beforeVsUnnest4: ratio(m["before"]!, m["unnest4"]!),
      afterVsUnnest4: ratio(m["after"]!, m["unnest4"]!),
      afterVsUnnest1: ratio(m["after"]!, m["unnest1"]!),
      afterVsBefore: ratio(m["after"]!, m["before"]!)
    })}; load average now ${load()}; ${new Date().toISOString()}`
  )
}

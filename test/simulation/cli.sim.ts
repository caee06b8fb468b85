/**
 * The body of `npm run simulate` (scripts/simulate.ts runs it under vitest, which provides the
 * migrated PGlite template). Arguments arrive as JSON in SIM_ARGS; the outcome is written as JSON
 * to SIM_OUT for the script to print. Fails (non-zero exit) when a history violates the invariant.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { bugsUsed, describeBugs, generate, type KnownBug, type Step } from "./model.js"
import { runHistory, type Violation } from "./runner.js"
import { shrink } from "./shrink.js"

interface SimArgs {
  readonly seed: number
  readonly steps: number
  readonly count: number
  readonly backend: "pglite" | "postgres"
  readonly include: ReadonlyArray<KnownBug>
  readonly replay?: ReadonlyArray<string>
  readonly name?: string
  readonly shrinkSeconds: number
  readonly verbose: boolean
}

const REGRESSIONS = path.join(import.meta.dirname, "regressions")

it("simulate", async () => {
  const args = JSON.parse(process.env["SIM_ARGS"] ?? "{}") as SimArgs
  const out: Array<Record<string, unknown>> = []
  let failures = 0
  const histories: Array<{ seed: number | null; name?: string; steps: ReadonlyArray<Step> }> = args.replay
    ? args.replay.map((f) => ({ seed: null, name: path.basename(f, ".json"), steps: (JSON.parse(fs.readFileSync(f, "utf8")) as { steps: Array<Step> }).steps }))
    : Array.from({ length: args.count }, (_, i) => ({
        seed: args.seed + i,
        steps: generate({ seed: args.seed + i, steps: args.steps, include: new Set(args.include) })
      }))
  for (const { seed, name: replayName, steps } of histories) {
    const started = Date.now()
    const trace = args.verbose ? (l: string) => process.stderr.write(`  +${((Date.now() - started) / 1000).toFixed(1)}s ${l}\n`) : undefined
    const r = await runHistory(steps, { backend: args.backend, ...(trace ? { trace } : {}) })
    const summary = {
      seed,
      steps: steps.length,
      backend: args.backend,
      seconds: (Date.now() - started) / 1000,
      checks: r.checks,
      syncRuns: r.syncRuns,
      oldestHour: r.oldestHour,
      violation: r.violation ?? null
    }
    process.stderr.write(`seed ${seed ?? replayName}: ${r.violation ? `VIOLATION (${r.violation.kind}) at step ${r.violation.step}` : "ok"} — ${JSON.stringify({ ...summary, violation: undefined })}\n`)
    if (!r.violation) {
      out.push(summary)
      continue
    }
    failures++
    process.stderr.write(`seed ${seed}: ${r.violation.details.join("\n  ")}\n`)
    let shrunk: { steps: Array<Step>; violation: Violation; runs: number } = { steps: [...steps], violation: r.violation, runs: 0 }
    if (args.shrinkSeconds > 0) {
      shrunk = await shrink(steps, r.violation, {
        backend: args.backend,
        budgetMs: args.shrinkSeconds * 1000,
        log: (l) => process.stderr.write(`  ${l}\n`)
      })
    }
    const bugs = bugsUsed(shrunk.steps)
    const name = args.name ?? replayName ?? `seed-${seed}-${shrunk.violation.kind}`
    const file = path.join(REGRESSIONS, `${name}.json`)
    const record = {
      name,
      seed,
      backend: args.backend,
      knownBugs: bugs,
      violation: shrunk.violation,
      note: bugs.length > 0 ? `needs the fixes of ${describeBugs(bugs)}` : "",
      steps: shrunk.steps
    }
    fs.mkdirSync(REGRESSIONS, { recursive: true })
    fs.writeFileSync(file, JSON.stringify(record, null, 2) + "\n")
    process.stderr.write(`seed ${seed}: shrunk to ${shrunk.steps.length} steps in ${shrunk.runs} runs; written to ${path.relative(process.cwd(), file)}\n${JSON.stringify(shrunk.steps)}\n`)
    out.push({ ...summary, shrunkSteps: shrunk.steps.length, regression: file, shrunkViolation: shrunk.violation })
  }
  if (process.env["SIM_OUT"]) fs.writeFileSync(process.env["SIM_OUT"], JSON.stringify(out, null, 2))
  expect(failures, "histories with a violation").toBe(0)
})

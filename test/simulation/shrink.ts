/**
 * Greedy shrinking of a failing history: cut at the failing step, then drop chunks of steps
 * (halving their size down to one) while a violation of the same kind still happens. Every
 * candidate is a full run on a fresh service, so a time budget bounds it.
 */
import type { Step } from "./model.js"
import { runHistory, type RunOptions, type Violation } from "./runner.js"

export const shrink = async (
  steps: ReadonlyArray<Step>,
  first: Violation,
  options: RunOptions & { readonly budgetMs: number; readonly log?: (line: string) => void }
): Promise<{ steps: Array<Step>; violation: Violation; runs: number }> => {
  const deadline = Date.now() + options.budgetMs
  const log = options.log ?? (() => undefined)
  let cur = steps.slice(0, Math.min(first.step + 1, steps.length))
  let violation = first
  let runs = 0
  const fails = async (cand: ReadonlyArray<Step>): Promise<Violation | undefined> => {
    runs++
    const r = await runHistory(cand, options.backend ? { backend: options.backend } : {})
    return r.violation?.kind === first.kind ? r.violation : undefined
  }
  let chunk = Math.max(1, Math.ceil(cur.length / 2))
  for (;;) {
    for (let i = 0; i < cur.length && Date.now() < deadline; ) {
      const cand = [...cur.slice(0, i), ...cur.slice(i + chunk)]
      const v = cand.length > 0 ? await fails(cand) : undefined
      if (v) {
        cur = cand.slice(0, Math.min(v.step + 1, cand.length))
        violation = v
        log(`shrink: ${cur.length} steps still fail (${v.kind})`)
      } else i += chunk
    }
    if (Date.now() >= deadline) {
      log("shrink: time budget reached")
      break
    }
    if (chunk === 1) break
    chunk = Math.max(1, Math.floor(chunk / 2))
  }
  return { steps: cur, violation, runs }
}

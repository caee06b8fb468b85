/** The demo's progress lines, phase timings and Stripe calls per phase. */
import { Clock, Console, Effect } from "effect"
import type { StripeEmulatorHandle } from "../stripe-emulator/index.js"
import type { PhaseTiming } from "./Model.js"
import { formatSeconds } from "./Report.js"

export const makeProgress = (options: { readonly started: number; readonly printing: boolean; readonly emulator: StripeEmulatorHandle }) => {
  const { started, printing, emulator } = options
  const phases: Array<PhaseTiming> = []
  const callsByPhase: Record<string, number> = {}
  let phaseStart = started
  let callsMark = 0
  const elapsed = (t: number) => `${formatSeconds(t - started).padStart(5)}s`
  const say = (line: string) => (printing ? Console.log(line) : Effect.void)
  return {
    phases,
    callsByPhase,
    say,
    phaseDone: (phase: string, detail: string) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        phases.push({ phase, ms: now - phaseStart, detail })
        phaseStart = now
        yield* say(`[${elapsed(now)}] ${phase.padEnd(10)} ${detail}`)
      }),
    /** Attributes the Stripe calls since the last mark to `phase`. */
    markCalls: (phase: string) => {
      const total = emulator.totalCalls()
      callsByPhase[phase] = (callsByPhase[phase] ?? 0) + (total - callsMark)
      callsMark = total
    }
  }
}

export type Progress = ReturnType<typeof makeProgress>

/**
 * `flexprice demo` (`npm run demo`): the CLI command over `runDemo`. Exits non-zero with the list
 * of mismatches when any total differs.
 */
import { Command, Options } from "@effect/cli"
import { Effect } from "effect"
import { DemoFailed, runDemo } from "./Demo.js"

export { DemoFailed, runDemo } from "./Demo.js"
export type { DemoOptions, DemoReport, MeterSummary, PhaseTiming, SyncRunSummary } from "./Model.js"
export { DEMO_METERS, generateUsage, Totals } from "./Generator.js"
export { formatReport } from "./Report.js"

const positive = (name: string, fallback: number, description: string) =>
  Options.integer(name).pipe(Options.withDefault(fallback), Options.withDescription(description))

export const demoCommand = Command.make(
  "demo",
  {
    customers: positive("customers", 200, "Stripe customers onboarded by signed customer.created webhooks"),
    events: positive("events", 60_000, "usage events ingested for one closed hour"),
    late: Options.integer("late").pipe(Options.optional, Options.withDescription("late events for the same hour after the first sync (default 1% of --events)")),
    // `--no-faults` is the flag; `--faults` (the default) is accepted as its negation.
    noFaults: Options.boolean("no-faults", { negationNames: ["faults"] }).pipe(
      Options.withDescription("do not inject 429s and 5xx into the first sync's Stripe calls (default: --faults)")
    ),
    keep: Options.boolean("keep").pipe(Options.withDescription("keep the embedded data directory and print its path"))
  },
  ({ customers, events, late, noFaults, keep }) =>
    Effect.gen(function* () {
      if (customers < 2 || events < 1) return yield* new DemoFailed({ message: "--customers must be ≥ 2 and --events ≥ 1" })
      const report = yield* runDemo({
        customers,
        events,
        ...(late._tag === "Some" ? { late: late.value } : {}),
        faults: !noFaults,
        keep
      })
      if (!report.ok) return yield* new DemoFailed({ message: `demo failed: ${report.failures.join("; ")}` })
    })
).pipe(
  Command.withDescription(
    "Run the whole product in one process: the API on PGlite, the Stripe emulator, webhooks, an hour of usage, syncs under faults, a reconciliation table"
  )
)

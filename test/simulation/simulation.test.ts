/**
 * The deterministic simulator in CI: a fixed set of seeded histories (operations of open known
 * bugs left out, see KNOWN_BUGS in model.ts), every saved regression history whose bugs are
 * fixed, proof that the check catches a wrong Stripe, and the oracle's rules on their own.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { STRIPE_KEY } from "../sync/support.js"
import { SyncEmulator } from "../sync/syncLayer.js"
import { bugsUsed, describeBugs, generate, KNOWN_BUG_NAMES, KNOWN_BUGS, type KnownBug, openBugs, type Step } from "./model.js"
import { Oracle, toFixed } from "./oracle.js"
import { historyLayer, type RunResult, simulate } from "./runner.js"

/** Seeds × steps CI runs on every change (PGlite). */
const CI_SEEDS = [101, 202, 303] as const
const CI_STEPS = 25

const REGRESSIONS = path.join(import.meta.dirname, "regressions")

interface Regression {
  readonly name: string
  readonly knownBugs: ReadonlyArray<KnownBug>
  readonly violation: { readonly kind: string; readonly details: ReadonlyArray<string> }
  readonly steps: ReadonlyArray<Step>
}

const regressions: Array<Regression> = fs.existsSync(REGRESSIONS)
  ? fs
      .readdirSync(REGRESSIONS)
      .filter((f) => f.endsWith(".json"))
      .sort()
      .map((f) => JSON.parse(fs.readFileSync(path.join(REGRESSIONS, f), "utf8")) as Regression)
  : []

const failure = (r: RunResult) =>
  r.violation ? `${r.violation.kind} at step ${r.violation.step}:\n${r.violation.details.join("\n")}` : undefined

// Every history on a service and emulator of its own (`historyLayer`), as runHistory gives the CLI.
describe("simulation: seeded histories", () => {
  for (const seed of CI_SEEDS) {
    layer(historyLayer(), { excludeTestServices: true })((it) => {
      it.effect(
        `seed ${seed} × ${CI_STEPS} steps keeps the money invariant`,
        () =>
          Effect.gen(function* () {
            const steps = generate({ seed, steps: CI_STEPS })
            // the CI set uses only settled rules: no operation of an open bug
            expect(bugsUsed(steps).filter((b) => KNOWN_BUGS[b].open)).toEqual([])
            const r = yield* simulate(steps)
            expect(failure(r)).toBeUndefined()
            expect(r.checks).toBeGreaterThan(0)
          }),
        300_000
      )
    })
  }
})

describe("simulation: saved regressions", () => {
  const open = openBugs()
  const held = regressions.filter((r) => r.knownBugs.some((b) => open.has(b)))
  const replayed = regressions.filter((r) => !held.includes(r))

  for (const reg of replayed) {
    layer(historyLayer(), { excludeTestServices: true })((it) => {
      it.effect(`replays ${reg.name} without a violation`, () => Effect.map(simulate(reg.steps), (r) => expect(failure(r)).toBeUndefined()), 300_000)
    })
  }

  it("regressions of open bugs are held back (flip KNOWN_BUGS[...].open when the fix lands)", () => {
    for (const r of regressions) for (const b of r.knownBugs) expect(KNOWN_BUG_NAMES).toContain(b)
    // every file names the bugs its history really exercises
    for (const r of regressions) expect([...r.knownBugs].sort()).toEqual(bugsUsed(r.steps).sort())
    if (held.length > 0) {
      const lines = held.map((r) => `  - ${r.name}: needs ${describeBugs(r.knownBugs.filter((b) => open.has(b)))} — ${r.violation.kind}: ${r.violation.details[0] ?? ""}`)
      console.warn(
        `\n!!! ${held.length} simulation regression(s) NOT replayed: their known bugs are still open (test/simulation/model.ts KNOWN_BUGS):\n${lines.join("\n")}\n`
      )
    }
  })
})

layer(historyLayer(), { excludeTestServices: true })("simulation: the check can fail", (it) => {
  it.effect(
    "a meter event Stripe holds beyond the usage is reported as a money violation",
    () =>
      Effect.gen(function* () {
        const steps: Array<Step> = [
          { op: "customer", id: "c0", map: true },
          { op: "ingest", mode: "bulk", events: [{ id: "e0", customer: "c0", meter: "m0", hoursAgo: 3, minute: 5, qty: "2.5" }] },
          { op: "sync" }
        ]
        const r = yield* simulate(steps, {
          beforeFinalCheck: Effect.gen(function* () {
            const emulator = yield* SyncEmulator
            const customer = emulator.state.customers()[0]!.id
            const res = yield* Effect.promise(() =>
              fetch(`${emulator.url}/v1/billing/meter_events`, {
                method: "POST",
                headers: { authorization: `Bearer ${STRIPE_KEY}`, "content-type": "application/x-www-form-urlencoded" },
                body: new URLSearchParams({
                  event_name: "stripe_m0",
                  identifier: "sabotage-1",
                  "payload[stripe_customer_id]": customer,
                  "payload[value]": "0.000000000001"
                }).toString()
              })
            )
            expect(res.status).toBe(200)
          })
        })
        expect(r.violation?.kind).toBe("money")
        expect(r.violation?.details[0]).toContain("expected 2.5, Stripe has 2.500000000001")
      }),
    120_000
  )
})

describe("simulation: oracle rules", () => {
  const oracle = () => {
    const o = new Oracle()
    o.aggregation.set("m0", "SUM").set("m1", "SUM").set("m2", "COUNT")
    for (const m of ["m0", "m1", "m2"] as const) o.meters.set(m, { present: true, enabled: true, whole: false, everWhole: false })
    return o
  }
  const ev = (id: string, customer: string, qty: string, hoursAgo = 2, meter: "m0" | "m1" | "m2" = "m0") => ({ id, customer, meter, hoursAgo, minute: 0, qty })

  it("first copy wins, unmapped and too-late usage is not billable, COUNT counts events", () => {
    const o = oracle()
    o.customers.set("a", { stripeId: "cus_a" }).set("b", { stripeId: null })
    o.ingest(ev("1", "a", "1.000000000001"))
    o.ingest(ev("1", "a", "99")) // duplicate id: ignored
    o.ingest(ev("2", "a", "3", 35 * 24 + 30)) // past 35 days
    o.ingest(ev("3", "b", "7")) // unmapped
    o.ingest(ev("4", "a", "5", 2, "m2"))
    o.ingest(ev("5", "a", "6", 2, "m2"))
    o.ingest({ ...ev("6", "a", "4"), futureMinutes: 30 }) // refused
    const b = o.billable()
    expect(b.get("cus_a|m0")?.exact).toBe(toFixed("1.000000000001"))
    expect(b.get("cus_a|m2")?.exact).toBe(toFixed("2"))
    expect(b.has("cus_b|m0")).toBe(false)
  })

  it("judges exact totals exactly; 15 significant digits and whole units short by less than one unit", () => {
    const o = oracle()
    const want = (v: string) => ({ exact: toFixed(v), hasNegative: false })
    expect(o.judge("m0", want("2.5"), toFixed("2.5"))).toBeUndefined()
    expect(o.judge("m0", want("2.5"), toFixed("2.499999999999"))).toContain("missing 0.000000000001")
    expect(o.judge("m0", want("2.5"), toFixed("2.500000000001"))).toContain("extra")
    // 1234567890123.123456789 has 22 significant digits: Stripe gets at most 15 (unit 0.01)
    expect(o.judge("m0", want("1234567890123.123456789"), toFixed("1234567890123.12"))).toBeUndefined()
    expect(o.judge("m0", want("1234567890123.123456789"), toFixed("1234567890123.11"))).toContain("missing")
    o.meters.get("m1")!.everWhole = true
    expect(o.judge("m1", want("7.9"), toFixed("7"))).toBeUndefined()
    expect(o.judge("m1", want("7.9"), toFixed("6"))).toContain("whole-unit")
    expect(o.judge("m1", want("7.9"), toFixed("8"))).toContain("whole-unit")
    o.meters.get("m0")!.enabled = false
    expect(o.judge("m0", want("2.5"), toFixed("1"))).toBeUndefined()
    expect(o.judge("m0", want("2.5"), toFixed("3"))).toContain("disabled")
  })
})

/**
 * Runs a history (a list of `Step`s) against the whole service — HTTP API, sync pipeline, ledger
 * on PGlite or PostgreSQL — and the Stripe emulator in process (`historyLayer`: test/sync/syncLayer.ts
 * with the log capture beneath it), keeping the independent oracle in step. At every `check` step (and once at the end) it brings the
 * system to quiescence — faults off, runs until no batch is pending or sending — and checks:
 *
 *   1. money: for every (Stripe customer, Stripe meter) the emulator holds what the oracle says;
 *   2. no batch stuck in pending/sending, no failed batch without an error code;
 *   3. the Stripe secret is in no captured log line and no batch error message;
 *   4. ingest refuses exactly what the documented rules refuse.
 *
 * The first violation ends the run; `shrink.ts` then drops steps while the same kind of
 * violation still happens.
 *
 * `simulate` is the run as an effect on `historyLayer` (a `layer(…)` suite's `it.effect`);
 * `runHistory` runs it on a fresh `historyLayer` of its own, for the simulator's CLI and shrinking.
 */
import { Cause, Context, Duration, Effect, Fiber, Layer, Logger, Option } from "effect"
import { IngestResult } from "../../src/domain/Models.js"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import type { Backend } from "../support/app.js"
import { ApiClient, inTestTenant, raw } from "../support/TestApp.js"
import { hoursAgo, type MeterSetup, STRIPE_KEY } from "../sync/support.js"
import { batches, configure, customer, mapCustomer, meter, sync, SyncEmulator, syncLayer } from "../sync/syncLayer.js"
import { METERS, type MeterName, type MeterState, type SimEvent, type Step } from "./model.js"
import { Oracle, toFixed } from "./oracle.js"

export type ViolationKind = "money" | "stuck" | "failed_without_code" | "secret" | "ingest" | "error"

export interface Violation {
  readonly kind: ViolationKind
  /** Index of the step during which it was found (`steps.length` = the final check). */
  readonly step: number
  readonly details: ReadonlyArray<string>
}

export interface RunResult {
  readonly violation: Violation | undefined
  readonly stepsRun: number
  readonly checks: number
  /** Oldest window touched, in hours before the run (the simulated time span). */
  readonly oldestHour: number
  readonly syncRuns: number
}

/** Captures every log line of the service (Effect logger and console) while a history runs. */
const captureLogs = () => {
  const lines: Array<string> = []
  const push = (line: string) => {
    if (lines.length < 200_000) lines.push(line)
  }
  const logger = Logger.make(({ annotations, cause, logLevel, message }) => {
    const ann = [...annotations].map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")
    const msg = Array.isArray(message) ? message.map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ") : String(message)
    push(`${logLevel.label} ${msg} ${ann} ${Cause.isEmpty(cause) ? "" : Cause.pretty(cause)}`)
  })
  const methods = ["log", "info", "warn", "error", "debug"] as const
  const saved = methods.map((m) => console[m])
  const install = () => {
    for (const m of methods) console[m] = (...args: Array<unknown>) => push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" "))
  }
  const restore = () => methods.forEach((m, i) => (console[m] = saved[i]!))
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger), install, restore }
}

/** The log lines `historyLayer` captured so far (the service's and the console's). */
export class CapturedLogs extends Context.Tag("test/simulation/CapturedLogs")<CapturedLogs, ReadonlyArray<string>>() {}

/**
 * A history's service: `syncLayer` on `backend` (PGlite by default) over a capture of its log
 * lines (`CapturedLogs`), installed before the service starts and removed after it stopped.
 */
export const historyLayer = (backend: Backend = "pglite") => {
  const capture = Layer.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => {
          const logs = captureLogs()
          logs.install()
          return logs
        }),
        (logs) => Effect.sync(logs.restore)
      ),
      (logs) => Layer.merge(logs.layer, Layer.succeed(CapturedLogs, logs.lines))
    )
  )
  // FLEXPRICE_TEST_LOG: every level reaches the capturing logger
  return syncLayer({ backend, env: { FLEXPRICE_SYNC_LEASE_SECONDS: "3", FLEXPRICE_TEST_LOG: "1" } }).pipe(Layer.provideMerge(capture))
}

export interface RunOptions {
  /** `runHistory`'s service (`historyLayer`'s backend). */
  readonly backend?: Backend
  /** Progress lines (one per step). */
  readonly trace?: (line: string) => void
  /** Test hook: runs before the final check (e.g. to prove the check catches a wrong Stripe). */
  readonly beforeFinalCheck?: Effect.Effect<void, unknown, SyncEmulator>
}

/** Runs `steps` on the service of `historyLayer` (fresh per history: nothing carries over between histories). */
export const simulate = (steps: ReadonlyArray<Step>, options: RunOptions = {}) =>
  Effect.flatMap(CapturedLogs, (lines) => new Simulation(lines, options).run(steps))

/** `simulate` on a fresh `historyLayer(options.backend)` of its own, disposed after the run. */
export const runHistory = (steps: ReadonlyArray<Step>, options: RunOptions = {}): Promise<RunResult> =>
  Effect.runPromise(Effect.provide(simulate(steps, options), historyLayer(options.backend)))

class Simulation {
  private readonly oracle = new Oracle()
  private readonly meters = new Map<MeterName, MeterSetup>()
  private readonly customerIds = new Map<string, string>()
  private transport: "stream" | "v1" = "stream"
  private windowMinutes = 60
  private syncRuns = 0
  private checks = 0
  private oldestHour = 0

  constructor(
    private readonly logLines: ReadonlyArray<string>,
    private readonly options: RunOptions
  ) {}

  run(steps: ReadonlyArray<Step>) {
    return Effect.gen(this, function* () {
      const result = (violation: Violation | undefined, stepsRun: number): RunResult => ({
        violation,
        stepsRun,
        checks: this.checks,
        oldestHour: this.oldestHour,
        syncRuns: this.syncRuns
      })
      yield* configure({ transport: "stream", windowMinutes: 60, graceMinutes: 0 })
      for (const m of METERS) {
        this.meters.set(m.name, yield* meter(m.name, { aggregation: m.aggregation, field: "qty" }))
        this.oracle.aggregation.set(m.name, m.aggregation)
        this.oracle.meters.set(m.name, { present: true, enabled: true, whole: false, everWhole: false })
      }
      for (let i = 0; i <= steps.length; i++) {
        const step: Step = i < steps.length ? steps[i]! : { op: "check" }
        if (i === steps.length && this.options.beforeFinalCheck) yield* this.options.beforeFinalCheck
        this.options.trace?.(`${i < steps.length ? `step ${i}` : "final"} ${JSON.stringify(step).slice(0, 160)}`)
        // a step that fails or dies (a refused request, a defect) is the run's violation, as is
        const details = yield* this.apply(step).pipe(
          Effect.catchAllCause((cause) => Effect.succeed({ kind: "error" as const, details: [`step threw: ${Cause.pretty(cause)}`] }))
        )
        if (details) return result({ step: i, ...details }, i + 1)
      }
      return result(undefined, steps.length + 1)
    })
  }

  private apply(step: Step) {
    return Effect.gen(this, function* () {
      switch (step.op) {
        case "ingest":
          return yield* this.ingest(step.mode, step.events)
        case "customer": {
          if (this.customerIds.has(step.id)) return undefined
          const c = step.map
            ? yield* customer(step.id)
            : { customerId: (yield* (yield* ApiClient).customers.create({ payload: { external_id: step.id } })).id, stripeId: null }
          this.customerIds.set(step.id, c.customerId)
          this.oracle.customers.set(step.id, { stripeId: c.stripeId })
          return undefined
        }
        case "map": {
          const customerId = this.customerIds.get(step.id)
          const known = this.oracle.customers.get(step.id)
          if (!customerId || !known || known.stripeId) return undefined // removed by shrinking: no-op
          known.stripeId = yield* mapCustomer(customerId)
          return undefined
        }
        case "meter":
          return yield* this.meter(step.meter, step.set)
        case "config":
          this.transport = step.transport
          this.windowMinutes = step.windowMinutes
          // Through the public API, as a user changes it: the window-size history is recorded there.
          yield* (yield* ApiClient).stripeConfig.putConfig({
            payload: { transport: step.transport, aggregation_window_minutes: step.windowMinutes, grace_period_minutes: 0 }
          })
          return undefined
        case "fault": {
          const emulator = yield* SyncEmulator
          const faults =
            step.kind === "rate_limit"
              ? { rateLimitFraction: 0.6, seed: step.seed }
              : step.kind === "server_error"
                ? { serverErrorFraction: 0.5, serverErrorStatus: 500 as const, seed: step.seed }
                : step.kind === "drop"
                  ? { dropFraction: 0.3, seed: step.seed }
                  : { outageForMs: 60_000 }
          yield* emulator.setFaults(faults)
          yield* this.syncOnce().pipe(Effect.ensuring(Effect.sync(() => emulator.resetFaults())))
          return undefined
        }
        case "crash":
          yield* this.crash(step.delayMs)
          return undefined
        case "sync":
          yield* this.syncOnce()
          return undefined
        case "concurrent":
          yield* Effect.all([this.syncOnce(), this.syncOnce()], { concurrency: "unbounded" })
          return undefined
        case "check":
          return yield* this.check()
      }
    })
  }

  private payload(e: SimEvent): Record<string, unknown> {
    const timestamp =
      e.futureMinutes !== undefined ? new Date(Date.now() + e.futureMinutes * 60_000).toISOString() : hoursAgo(e.hoursAgo, e.minute)
    if (e.futureMinutes === undefined) this.oldestHour = Math.max(this.oldestHour, e.hoursAgo)
    return {
      event_id: e.id,
      event_name: e.meter,
      external_customer_id: e.customer,
      timestamp,
      ...(this.oracle.aggregation.get(e.meter) === "COUNT" ? {} : { properties: { qty: e.qty } })
    }
  }

  /**
   * Sent as is (`raw`, not the typed client): what the oracle judges is the answer's status —
   * 202 with per-event rejections, a 4xx refusal's code, anything else a violation.
   */
  private ingest(mode: "bulk" | "single", events: ReadonlyArray<SimEvent>) {
    return Effect.gen(this, function* () {
      const refusedBy = new Map<string, string>() // event_id → code
      if (mode === "bulk") {
        const res = yield* raw("POST", "/v1/events/bulk", { body: JSON.stringify({ events: events.map((e) => this.payload(e)) }) })
        if (res.status !== 202) return { kind: "ingest" as const, details: [`bulk ingest answered ${res.status}: ${res.text.slice(0, 500)}`] }
        for (const r of res.as(IngestResult).rejected) refusedBy.set(events[r.index]!.id, r.code)
      } else {
        for (const e of events) {
          const res = yield* raw("POST", "/v1/events", { body: JSON.stringify(this.payload(e)) })
          if (res.status === 202) {
            for (const r of res.as(IngestResult).rejected) refusedBy.set(e.id, r.code)
          } else if (res.status >= 400 && res.status < 500 && res.error !== undefined) refusedBy.set(e.id, res.error.code)
          else return { kind: "ingest" as const, details: [`single ingest answered ${res.status}: ${res.text.slice(0, 500)}`] }
        }
      }
    const problems: Array<string> = []
    for (const e of events) {
      const expectRefused = Oracle.refused(e)
      const code = refusedBy.get(e.id)
      if (expectRefused && code === undefined) problems.push(`event ${e.id} (${e.futureMinutes} min in the future) was accepted; Stripe refuses > 5 min ahead`)
      if (!expectRefused && code !== undefined) problems.push(`event ${e.id} (qty ${e.qty}, ${e.hoursAgo} h ago) was refused with ${code}`)
      if (code === undefined) this.oracle.ingest(e)
    }
    return problems.length > 0 ? { kind: "ingest" as const, details: problems } : undefined
    })
  }

  private meter(name: MeterName, set: MeterState) {
    return Effect.gen(this, function* () {
      const m = this.meters.get(name)!
      const state = this.oracle.meters.get(name)!
      if (set === "removed") {
        yield* inTestTenant(Effect.flatMap(MeterMappingRepo, (r) => r.remove(m.meterId)))
        state.present = false
        return undefined
      }
      const enabled = set === "disabled" ? false : set === "enabled" ? true : state.enabled || !state.present
      const whole = set === "whole" ? true : set === "fractional" ? false : state.whole
      const row = yield* inTestTenant(
        Effect.flatMap(MeterMappingRepo, (r) =>
          r.upsert({
            meterId: m.meterId,
            providerMeterId: m.providerMeterId,
            stripeEventName: m.stripeEventName,
            customerPayloadKey: "stripe_customer_id",
            valuePayloadKey: "value",
            formula: "sum",
            wholeUnits: whole,
            syncEnabled: enabled
          })
        )
      )
      if (Option.isNone(row)) return { kind: "error" as const, details: [`meter mapping upsert for ${name} refused`] }
      state.present = true
      state.enabled = enabled
      state.whole = whole
      state.everWhole = state.everWhole || whole
      return undefined
    })
  }

  /** A scheduled run of the tenant; another run holding the lease (or taking it over) is no failure. */
  private syncEffect() {
    return sync().pipe(
      // another run holds the tenant's lease (this run does nothing, like a scheduler tick), or
      // took it over from a paused run (that run stops; the next one continues its work)
      Effect.catchTags({ LeaseBusy: () => Effect.succeed(null), LeaseLost: () => Effect.succeed(null) })
    )
  }

  private syncOnce() {
    return Effect.suspend(() => {
      this.syncRuns++
      return this.syncEffect()
    })
  }

  /** A process crash mid-run: the run's fiber is interrupted at a random instant. */
  private crash(delayMs: number) {
    return Effect.gen(this, function* () {
      this.syncRuns++
      const fiber = yield* Effect.fork(this.syncEffect())
      yield* Effect.sleep(Duration.millis(delayMs))
      yield* Fiber.interrupt(fiber)
    })
  }

  private check() {
    return Effect.gen(this, function* () {
      this.checks++
      const emulator = yield* SyncEmulator
      emulator.resetFaults()
      // quiescence: runs until nothing is pending or sending (a busy lease or open breaker waits)
      let open: ReadonlyArray<{ syncStatus: string; identifier: string }> = []
      for (let i = 0; i < 40; i++) {
        yield* this.syncOnce()
        open = (yield* batches).filter((b) => b.syncStatus === "pending" || b.syncStatus === "sending")
        if (open.length === 0) break
        yield* Effect.sleep(Duration.millis(i < 5 ? 100 : 400))
      }
      const ledger = yield* batches
      if (open.length > 0) {
        return {
          kind: "stuck" as const,
          details: [`${open.length} batches still pending/sending after 40 runs`, ...ledger.filter((b) => b.syncStatus === "pending" || b.syncStatus === "sending").slice(0, 5).map((b) => JSON.stringify(b))]
        }
      }
      const noCode = ledger.filter((b) => b.syncStatus === "failed" && !b.errorCode)
      if (noCode.length > 0) return { kind: "failed_without_code" as const, details: noCode.slice(0, 5).map((b) => JSON.stringify(b)) }

      const secretIn = [
        ...this.logLines.filter((l) => l.includes(STRIPE_KEY)).map((l) => `log: ${l.slice(0, 300)}`),
        ...ledger.filter((b) => b.errorMessage?.includes(STRIPE_KEY)).map((b) => `batch ${b.identifier} error_message`)
      ]
      if (secretIn.length > 0) return { kind: "secret" as const, details: secretIn.slice(0, 5) }

      const money: Array<string> = []
      const expected = this.oracle.billable()
      const meterOf = new Map([...this.meters].map(([name, m]) => [m.stripeEventName, name]))
      const seen = new Set<string>()
      for (const t of emulator.state.totals()) {
        const meter = meterOf.get(t.eventName)
        const key = `${t.customer}|${meter}`
        seen.add(key)
        const want = expected.get(key)
        if (!meter || !want) {
          if (toFixed(t.sum) !== 0n) money.push(`${key}: Stripe has ${t.sum}, no billable usage expected`)
          continue
        }
        const v = this.oracle.judge(meter, want, toFixed(t.sum))
        if (v) money.push(`${this.who(t.customer)} ${meter}: ${v}`)
      }
      for (const [key, want] of expected) {
        if (seen.has(key) || want.exact === 0n) continue
        const [customer, meter] = key.split("|") as [string, MeterName]
        const v = this.oracle.judge(meter, want, 0n)
        if (v) money.push(`${this.who(customer)} ${meter}: ${v}`)
      }
      if (money.length > 0) {
        const byStatus = new Map<string, number>()
        for (const b of ledger) byStatus.set(`${b.syncStatus}/${b.skipReason ?? b.errorCode ?? ""}`, (byStatus.get(`${b.syncStatus}/${b.skipReason ?? b.errorCode ?? ""}`) ?? 0) + 1)
        money.push(`ledger: ${JSON.stringify(Object.fromEntries(byStatus))}; transport ${this.transport}, window ${this.windowMinutes} min`)
        return { kind: "money" as const, details: money }
      }
      return undefined
    })
  }

  private who(stripeCustomer: string): string {
    for (const [id, c] of this.oracle.customers) if (c.stripeId === stripeCustomer) return `${id} (${stripeCustomer})`
    return stripeCustomer
  }
}


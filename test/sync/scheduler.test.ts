/**
 * The scheduler starts each tenant's run at its window's due instant (window end + grace), not at
 * the next fixed tick: "synced within 65 minutes (hour + grace)". Virtual time (TestClock): the
 * decisions of the loop are checked to the millisecond; then the real pipeline, driven by the
 * loop under the TestClock, puts an hour's usage into the Stripe emulator while the clock reads
 * exactly end + grace (the only further delay is the run's own wall time, measured).
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Chunk, Clock, Effect, Fiber, Ref, TestClock, TestContext } from "effect"
import * as O from "../support/oracle.js"
import type { EnvironmentId, TenantId } from "../../src/domain/Ids.js"
import { TenantScope } from "../../src/domain/Ids.js"
import type { TenantStripeConfig } from "../../src/repositories/StripeConfigRepo.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { runSchedulerLoop } from "../../src/sync/SyncScheduler.js"
import { SyncService } from "../../src/sync/SyncService.js"
import { configure, customer, ingest, meter, SyncEmulator, syncLayerOnClock } from "./syncLayer.js"

const MIN = 60_000n

const config = (id: string, windowMinutes: number, graceMinutes: number): TenantStripeConfig => ({
  scope: new TenantScope({ tenantId: `tnt_${id}` as TenantId, environmentId: `env_${id}` as EnvironmentId }),
  syncEnabled: true,
  aggregationWindowMinutes: windowMinutes,
  gracePeriodMinutes: graceMinutes,
  transport: "stream",
  livemode: false,
  stripeAccountId: null
})

/** Due instants in (from, to]: k·window + grace, by BigInt arithmetic on the inputs. */
const dueInstants = (from: number, to: number, windowMinutes: number, graceMinutes: number): Array<number> => {
  const size = BigInt(windowMinutes) * MIN
  const grace = BigInt(graceMinutes) * MIN
  const out: Array<number> = []
  let k = (BigInt(from) - grace) / size
  for (;; k++) {
    const d = k * size + grace
    if (d > BigInt(to)) return out
    if (d > BigInt(from)) out.push(Number(d))
  }
}

/** Advance the TestClock in steps, letting the loop's fibers run between them. */
const advance = (ms: number, step = 30_000) =>
  Effect.gen(function* () {
    for (let done = 0; done < ms; done += step) yield* TestClock.adjust(Math.min(step, ms - done))
  })

const T0 = Date.parse("2026-01-01T10:17:30.000Z")

describe("SyncScheduler loop (TestClock)", () => {
  it.scoped("starts every tenant at each of its due instants, and every tenant at least every interval", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const a = config("a", 60, 5)
      const b = config("b", 15, 1)
      const starts = new Map<string, Array<number>>()
      yield* runSchedulerLoop({
        intervalSeconds: 60,
        concurrency: 4,
        listConfigs: Effect.succeed([a, b]),
        runTenant: (c) =>
          Effect.map(Clock.currentTimeMillis, (t) => {
            const k = c.scope.tenantId
            starts.set(k, [...(starts.get(k) ?? []), t])
          })
      })
      const horizon = 2 * 3_600_000
      yield* advance(horizon)
      for (const c of [a, b]) {
        const got = new Set(starts.get(c.scope.tenantId))
        const due = dueInstants(T0, T0 + horizon, c.aggregationWindowMinutes, c.gracePeriodMinutes)
        expect(due.length).toBeGreaterThan(1)
        for (const d of due) expect(got.has(d), `${c.scope.tenantId} run at ${new Date(d).toISOString()}`).toBe(true)
        // the backstop: never more than the interval between two runs of a tenant
        const sorted = [...got].sort((x, y) => x - y)
        expect(sorted[0]).toBe(T0)
        for (let i = 1; i < sorted.length; i++) expect(sorted[i]! - sorted[i - 1]!).toBeLessThanOrEqual(60_000)
      }
    })
  )

  it.scoped("a due instant passing during a run starts the next run as soon as that run ends", () =>
    Effect.gen(function* () {
      const start = Date.parse("2026-01-01T11:04:00.000Z")
      yield* TestClock.setTime(start)
      const a = config("slow", 60, 5)
      const starts: Array<number> = []
      yield* runSchedulerLoop({
        intervalSeconds: 60,
        concurrency: 1,
        listConfigs: Effect.succeed([a]),
        runTenant: () =>
          Effect.gen(function* () {
            starts.push(yield* Clock.currentTimeMillis)
            yield* Effect.sleep(90_000)
          })
      })
      yield* advance(150_000, 1_000)
      // 11:04:00 (first pass) runs until 11:05:30; the 11:05 due instant passed meanwhile
      expect(starts.slice(0, 2)).toEqual([start, Date.parse("2026-01-01T11:05:30.000Z")])
    })
  )

  it.scoped("a changed grace period is re-planned: the run starts at the new due instant", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const configs = yield* Ref.make([config("g", 60, 5)])
      const starts: Array<number> = []
      yield* runSchedulerLoop({
        intervalSeconds: 3600,
        concurrency: 1,
        listConfigs: Ref.get(configs),
        runTenant: () => Effect.map(Clock.currentTimeMillis, (t) => void starts.push(t))
      })
      yield* advance(60_000)
      yield* Ref.set(configs, [config("g", 60, 7)])
      yield* advance(Date.parse("2026-01-01T11:10:00.000Z") - T0 - 60_000)
      // first pass at T0, then 11:05 was planned before the change; from then on 11:07
      expect(starts).toContain(Date.parse("2026-01-01T11:07:00.000Z"))
      expect(starts[0]).toBe(T0)
    })
  )
})

// The emulator reads the test's virtual clock (session expiry, timestamp checks) once the test has
// one; real time while the layer starts and the tenant is set up.
const emulatorClock = { now: () => Date.now() }

layer(syncLayerOnClock(() => emulatorClock.now()), { excludeTestServices: true })("an hour's usage reaches Stripe at end + grace (real pipeline, TestClock)", (it) => {
  it.effect(
    "is in the emulator while the virtual clock reads window end + grace, not before",
    () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const service = yield* SyncService
        const configs = yield* StripeConfigRepo
        // set up on real time, as the harness did through the app's runtime
        const realNow = Date.now()
        yield* configure({ graceMinutes: 5 })
        const m = yield* meter("sched_tokens", { aggregation: "SUM", field: "tokens" })
        const c = yield* customer("sched-c")
        // usage in the current (real) hour; its window closes at the next full hour
        const hourStart = Math.floor(realNow / 3_600_000) * 3_600_000
        const quantities = ["1.5", "2.25", "3"]
        yield* ingest(
          quantities.map((q, i) => ({
            event_id: `sched-${i}`,
            event_name: m.eventName,
            external_customer_id: "sched-c",
            timestamp: new Date(hourStart + i).toISOString(),
            properties: { tokens: q }
          }))
        )
        const expected = O.format(O.sum(quantities))
        const dueAt = hourStart + 3_600_000 + 5 * 60_000
        const total = () => emulator.total(c.stripeId, m.stripeEventName).sum

        // the loop, the runs it starts and the emulator from here on: on a TestClock at realNow
        yield* Effect.gen(function* () {
          const clock = yield* Effect.clock
          yield* TestClock.setTime(realNow)
          emulatorClock.now = () => clock.unsafeCurrentTimeMillis()
          // What the loop is doing, so the test waits for it to be idle rather than for a fixed time:
          // passes begun (listing the tenants) and ended (afterPass), runs begun and ended.
          const seen = { passesBegun: 0, passesEnded: 0, runsBegun: 0, runsEnded: 0 }
          const loop = yield* runSchedulerLoop({
            intervalSeconds: 60,
            concurrency: 4,
            listConfigs: Effect.zipRight(Effect.sync(() => seen.passesBegun++), configs.listSyncEnabled),
            afterPass: () => Effect.sync(() => seen.passesEnded++),
            runTenant: (config) =>
              Effect.suspend(() => {
                seen.runsBegun++
                return service.outcomeOf(config, { trigger: "schedule" })
              }).pipe(Effect.ensuring(Effect.sync(() => seen.runsEnded++)))
          })
          /**
           * Until the loop is idle at the current virtual instant: no pass and no run under way, and
           * the loop asleep until a later instant (a pending TestClock sleep). Polled on real time: a
           * fiber woken or forked by the clock starts before the next poll. Gives up after 30 s of
           * real time and fails.
           */
          const idle = Effect.gen(function* () {
            const now = yield* Clock.currentTimeMillis
            const quiet = Effect.map(
              TestClock.sleeps(),
              (sleeps) =>
                seen.passesBegun === seen.passesEnded && seen.runsBegun === seen.runsEnded && Chunk.some(sleeps, (t) => t > now)
            )
            const realStart = Date.now()
            let ok = false
            while (!ok && Date.now() - realStart < 30_000) {
              yield* Effect.promise(() => new Promise((r) => setTimeout(r, 20)))
              ok = yield* quiet
            }
            expect(ok, `the scheduler loop went idle at ${new Date(now).toISOString()}: ${JSON.stringify(seen)}`).toBe(true)
          })
          // up to 1 ms before the due instant: nothing may reach Stripe
          yield* advance(dueAt - 1 - (yield* Clock.currentTimeMillis), 600_000)
          yield* idle
          expect(seen.runsEnded).toBeGreaterThan(0)
          const before = total()
          // the due instant: the loop wakes exactly then and the run pushes the window
          const realStart = Date.now()
          yield* TestClock.adjust(1)
          let after = total()
          while (O.compare(after, expected) !== 0 && Date.now() - realStart < 30_000) {
            yield* Effect.promise(() => new Promise((r) => setTimeout(r, 100)))
            after = total()
          }
          const virtualAt = yield* Clock.currentTimeMillis
          yield* Fiber.interrupt(loop)

          expect(O.compare(before, "0")).toBe(0)
          expect(after).toBe(expected)
          // synced with the virtual clock at exactly end + grace (the wait above gives up after 30 s
          // of real time; `after` then falls short and fails the test — no wall-clock assertion)
          expect(virtualAt).toBe(dueAt)
        }).pipe(Effect.scoped, Effect.provide(TestContext.TestContext))
      }),
    90_000
  )
})

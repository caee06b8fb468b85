/**
 * The turns of background migration chunks (JobGate) and their sizing (Config.nextChunkSize):
 * tenants take turns chunk by chunk whatever number of jobs each runs, an interrupted waiter
 * never strands the turn, and chunk sizes follow the time budget within their bounds.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Deferred, Effect, Fiber, Layer, TestClock } from "effect"
import { newId, TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { firstChunkSize, nextChunkSize } from "../../src/migration/Config.js"
import { JobGate } from "../../src/migration/JobGate.js"

const gateLayer = JobGate.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["FLEXPRICE_MIGRATION_CHUNK_PAUSE_MS", "0"]])))))
const tenant = () => new TenantScope({ tenantId: newId.tenant(), environmentId: newId.environment() })

describe("JobGate", () => {
  it.live("tenants alternate chunk by chunk: two jobs of one tenant get no more turns than one job of another", () =>
    Effect.gen(function* () {
      const gate = yield* JobGate
      const a = tenant()
      const b = tenant()
      const order: Array<string> = []
      // Hold the turn until every job waits, so the order is the gate's, not the start order's.
      const hold = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(gate.turn(Deferred.await(hold)))
      yield* Effect.sleep("20 millis")
      const job = (name: string, scope: TenantScope) =>
        Effect.forEach([1, 2, 3], (i) => gate.turn(Effect.sync(() => order.push(`${name}${i}`))), { discard: true }).pipe(Effect.provideService(CurrentTenant, scope))
      const jobs = yield* Effect.forEach(
        [
          ["a", a],
          ["A", a],
          ["b", b]
        ] as const,
        ([name, scope]) => Effect.fork(job(name, scope)),
        { concurrency: "unbounded" }
      )
      yield* Effect.sleep("20 millis")
      yield* Deferred.succeed(hold, undefined)
      yield* Fiber.join(holder)
      yield* Effect.forEach(jobs, Fiber.join, { discard: true })
      const tenantOf = (s: string) => (s.toLowerCase().startsWith("a") ? "a" : "b")
      // While b has turns left, a never takes two in a row.
      const lastB = order.lastIndexOf("b3")
      for (let i = 1; i <= lastB; i++) expect(tenantOf(order[i]!) === "a" && tenantOf(order[i - 1]!) === "a", order.join(" ")).toBe(false)
      expect(order).toHaveLength(9)
    }).pipe(Effect.provide(gateLayer))
  )

  it.live("a waiter interrupted while waiting leaves the queue; the turn still reaches the next one", () =>
    Effect.gen(function* () {
      const gate = yield* JobGate
      const hold = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(gate.turn(Deferred.await(hold)))
      yield* Effect.sleep("10 millis")
      const quitter = yield* Effect.fork(gate.turn(Effect.succeed("never")).pipe(Effect.provideService(CurrentTenant, tenant())))
      const waiter = yield* Effect.fork(gate.turn(Effect.succeed("ran")).pipe(Effect.provideService(CurrentTenant, tenant())))
      yield* Effect.sleep("10 millis")
      yield* Fiber.interrupt(quitter)
      yield* Deferred.succeed(hold, undefined)
      yield* Fiber.join(holder)
      expect(yield* Fiber.join(waiter)).toBe("ran")
      expect(yield* gate.turn(Effect.succeed("free again"))).toBe("free again")
    }).pipe(Effect.provide(gateLayer))
  )
})

describe("the pause after a turn", () => {
  const gateWith = (settings: Record<string, string>) => JobGate.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(settings))))))
  /** How long (test clock) after the first of two queued turns the second starts, the first taking 60 ms. */
  const secondStarts = Effect.gen(function* () {
    const gate = yield* JobGate
    const t0 = yield* TestClock.currentTimeMillis
    const first = yield* Effect.fork(gate.turn(Effect.sleep("60 millis")))
    yield* Effect.yieldNow()
    const second = yield* Effect.fork(gate.turn(TestClock.currentTimeMillis).pipe(Effect.provideService(CurrentTenant, tenant())))
    for (let i = 0; i < 200 && second.unsafePoll() === null; i++) yield* TestClock.adjust("1 millis")
    yield* Fiber.join(first)
    return (yield* Fiber.join(second)) - t0
  })

  it.effect("lasts as long as the turn took by default (background work gets at most half of the time)", () =>
    Effect.gen(function* () {
      expect(yield* secondStarts).toBe(120)
    }).pipe(Effect.provide(gateWith({})))
  )

  it.effect("is FLEXPRICE_MIGRATION_CHUNK_PAUSE_PERCENT of the turn's time, at least FLEXPRICE_MIGRATION_CHUNK_PAUSE_MS", () =>
    Effect.gen(function* () {
      expect(yield* secondStarts.pipe(Effect.provide(gateWith({ FLEXPRICE_MIGRATION_CHUNK_PAUSE_PERCENT: "50" })))).toBe(90)
      expect(yield* secondStarts.pipe(Effect.provide(gateWith({ FLEXPRICE_MIGRATION_CHUNK_PAUSE_PERCENT: "0" })))).toBe(70)
      expect(yield* secondStarts.pipe(Effect.provide(gateWith({ FLEXPRICE_MIGRATION_CHUNK_PAUSE_PERCENT: "0", FLEXPRICE_MIGRATION_CHUNK_PAUSE_MS: "0" })))).toBe(60)
    })
  )
})

describe("chunk sizes", () => {
  const config = { chunkRows: 100, chunkMillis: 40 }
  it("start at a quarter of chunkRows, grow at most twofold while quick, shrink at most by half while slow", () => {
    expect(firstChunkSize(config)).toBe(25)
    expect(nextChunkSize(config, 25, 5)).toBe(50)
    expect(nextChunkSize(config, 50, 30)).toBe(66)
    expect(nextChunkSize(config, 80, 1)).toBe(100)
    expect(nextChunkSize(config, 100, 60)).toBe(66)
    expect(nextChunkSize(config, 100, 1000)).toBe(50)
    expect(nextChunkSize(config, 30, 1000)).toBe(25)
    expect(nextChunkSize({ chunkRows: 2, chunkMillis: 40 }, 2, 1000)).toBe(1)
  })
})

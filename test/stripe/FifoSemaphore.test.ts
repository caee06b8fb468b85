import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Ref } from "effect"
import * as FifoSemaphore from "../../src/stripe/FifoSemaphore.js"

describe("FifoSemaphore", () => {
  it.effect("never exceeds its permits and serves waiters in arrival order", () =>
    Effect.gen(function* () {
      const sem = yield* FifoSemaphore.make(2)
      const active = yield* Ref.make(0)
      const maxActive = yield* Ref.make(0)
      const order = yield* Ref.make<Array<number>>([])
      const gate = yield* Deferred.make<void>()
      const task = (i: number) =>
        sem.withPermit(
          Effect.gen(function* () {
            const n = yield* Ref.updateAndGet(active, (a) => a + 1)
            yield* Ref.update(maxActive, (m) => Math.max(m, n))
            yield* Ref.update(order, (o) => [...o, i])
            if (i < 2) yield* Deferred.await(gate)
            yield* Effect.yieldNow()
            yield* Ref.update(active, (a) => a - 1)
          })
        )
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      for (let i = 0; i < 10; i++) {
        fibers.push(yield* Effect.fork(task(i)))
        yield* Effect.yieldNow()
      }
      expect(sem.waiting()).toBe(8)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.joinAll(fibers)
      expect(yield* Ref.get(maxActive)).toBe(2)
      expect(yield* Ref.get(order)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      expect(sem.available()).toBe(2)
    }))

  it.effect("an interrupted waiter gives up its place without losing a permit", () =>
    Effect.gen(function* () {
      const sem = yield* FifoSemaphore.make(1)
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(sem.withPermit(Deferred.await(gate)))
      yield* Effect.yieldNow()
      const waiter = yield* Effect.fork(sem.withPermit(Effect.void))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiter)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      expect(sem.available()).toBe(1)
      expect(yield* sem.withPermit(Effect.succeed("ok"))).toBe("ok")
    }))

  it.effect("a failing or interrupted holder returns its permit", () =>
    Effect.gen(function* () {
      const sem = yield* FifoSemaphore.make(1)
      yield* Effect.exit(sem.withPermit(Effect.fail("boom")))
      const running = yield* Effect.fork(sem.withPermit(Effect.never))
      yield* Effect.yieldNow()
      expect(sem.available()).toBe(0)
      yield* Fiber.interrupt(running)
      expect(sem.available()).toBe(1)
    }))

  it.effect("10,000 queued fibers behind 4 permits all complete (no O(n²) wake-ups)", () =>
    Effect.gen(function* () {
      const sem = yield* FifoSemaphore.make(4)
      const done = yield* Ref.make(0)
      yield* Effect.all(
        Array.from({ length: 10_000 }, () => sem.withPermit(Effect.yieldNow().pipe(Effect.zipRight(Ref.update(done, (n) => n + 1))))),
        { concurrency: "unbounded", discard: true }
      )
      expect(yield* Ref.get(done)).toBe(10_000)
      expect(sem.available()).toBe(4)
    }))
})

/**
 * Turns for the chunks of background migration work. Every chunk that writes (a CSV import's rows,
 * a rollback's deletions, a migration page) takes the one turn and hands it on when done, so
 * request traffic reaches the database between any two chunks.
 *
 * Fair per tenant: waiters queue per tenant, and the turn goes round the tenants that wait, one
 * chunk each — a tenant running an import and a rollback at once gets no more turns than one
 * running a single job. (Effect's Semaphore lets a releasing fiber take the permit straight back,
 * which would starve the others.)
 *
 * A turn ends with a pause (MigrationRunnerConfig.chunkPauseMillis, and at least as long as the
 * chunk took — chunkPausePercent of that, 100 by default — capped at 1 s), still holding the
 * turn: a request makes several queries, each queued for the one embedded connection, and without
 * the pause each of them would wait behind a new chunk. Background work gets at most half of the
 * database's time by default.
 */
import { Deferred, Duration, Effect, Option } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import { MigrationRunnerConfig } from "./Config.js"

export class JobGate extends Effect.Service<JobGate>()("flexprice/JobGate", {
  effect: Effect.gen(function* () {
    const config = yield* MigrationRunnerConfig
    let busy = false
    /** Waiters per tenant; the map's order is the round (a served tenant with more waiters goes last). */
    const waiting = new Map<string, Array<Deferred.Deferred<void>>>()

    /** Give the turn to the next tenant's first waiter, or free it. */
    const handOver = Effect.suspend(() => {
      const first = waiting.entries().next()
      if (first.done === true) {
        busy = false
        return Effect.void
      }
      const [key, queue] = first.value
      const next = queue.shift()!
      waiting.delete(key)
      if (queue.length > 0) waiting.set(key, queue)
      return Deferred.succeed(next, undefined)
    })

    const leave = (key: string, d: Deferred.Deferred<void>) => {
      const queue = waiting.get(key)
      const i = queue?.indexOf(d) ?? -1
      if (queue === undefined || i < 0) return false
      queue.splice(i, 1)
      if (queue.length === 0) waiting.delete(key)
      return true
    }

    /**
     * Hand over once the releasing fiber has had its chance to queue again: a job asks for its
     * next turn right after this one, and it must queue behind the tenants waiting now, not be
     * missed by this hand-over (its tenant would then take two turns in a row).
     */
    const release = Effect.forkDaemon(Effect.yieldNow().pipe(Effect.zipRight(handOver)))

    const pause = (took: Duration.Duration) =>
      Duration.max(Duration.millis(config.chunkPauseMillis), Duration.min(Duration.times(took, config.chunkPausePercent / 100), Duration.seconds(1)))

    /** Run `effect` in its turn, then pause before handing the turn over; answers how long `effect` took. */
    const timedTurn = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<readonly [Duration.Duration, A], E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const tenant = yield* Effect.serviceOption(CurrentTenant)
          const key = Option.match(tenant, { onNone: () => "", onSome: (t) => t.tenantId })
          if (busy) {
            const d = yield* Deferred.make<void>()
            const queue = waiting.get(key)
            if (queue === undefined) waiting.set(key, [d])
            else queue.push(d)
            // Interrupted while waiting: leave the queue, or pass on a turn handed over meanwhile.
            yield* restore(Deferred.await(d)).pipe(Effect.onInterrupt(() => (leave(key, d) ? Effect.void : handOver)))
          } else busy = true
          return yield* restore(Effect.timed(effect).pipe(Effect.tap(([took]) => Effect.sleep(pause(took))))).pipe(Effect.ensuring(release))
        })
      )

    const turn = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.map(timedTurn(effect), ([, a]) => a)

    return { turn, timedTurn } as const
  })
}) {}

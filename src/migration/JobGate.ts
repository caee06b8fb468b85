/**
 * Turns for the chunks of background migration work. Every chunk that writes (a CSV import's rows,
 * a rollback's deletions, a migration page) takes the one turn, first come first served, and hands
 * it to the next waiter when done: two tenants' long jobs alternate chunk by chunk instead of one
 * running to its end first, and request traffic reaches the database between any two chunks.
 * (Effect's Semaphore lets a releasing fiber take the permit straight back, which would starve
 * the others; a queue hands the turn over in order.)
 */
import { Effect, Queue } from "effect"

export class JobGate extends Effect.Service<JobGate>()("flexprice/JobGate", {
  effect: Effect.gen(function* () {
    const turns = yield* Queue.bounded<void>(1)
    yield* Queue.offer(turns, undefined)
    /** Run `effect` in its turn; yields once afterwards so waiting requests run before the next chunk. */
    const turn = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.acquireUseRelease(
        Queue.take(turns),
        () => effect,
        () => Queue.offer(turns, undefined)
      ).pipe(Effect.zipLeft(Effect.yieldNow()))
    return { turn } as const
  })
}) {}

/**
 * Turns for the chunks of background migration work. Every chunk that writes (a CSV import's rows,
 * a rollback's deletions, a migration page) takes the one turn, first come first served, and hands
 * it to the next waiter when done: two tenants' long jobs alternate chunk by chunk instead of one
 * running to its end first, and request traffic reaches the database between any two chunks.
 * (Effect's Semaphore lets a releasing fiber take the permit straight back, which would starve
 * the others; a queue hands the turn over in order.)
 *
 * A turn ends with a pause as long as the chunk took (at most 1 s), still holding the turn: a
 * request makes several queries, each queued for the one embedded connection, and without the
 * pause each of them would wait behind a new chunk. Background work gets at most half of the
 * database's time.
 */
import { Duration, Effect, Queue } from "effect"

export class JobGate extends Effect.Service<JobGate>()("flexprice/JobGate", {
  effect: Effect.gen(function* () {
    const turns = yield* Queue.bounded<void>(1)
    yield* Queue.offer(turns, undefined)
    /** Run `effect` in its turn, then pause as long (at most 1 s) before handing the turn over. */
    const turn = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.acquireUseRelease(
        Queue.take(turns),
        () => Effect.timed(effect).pipe(Effect.tap(([took]) => Effect.sleep(Duration.min(took, Duration.seconds(1)))), Effect.map(([, a]) => a)),
        () => Queue.offer(turns, undefined)
      )
    return { turn } as const
  })
}) {}

/**
 * Counts the HTTP requests sent to Stripe by whatever runs inside `countingRequests` (every page
 * of a list, every retry), whichever client operation sent them: the call budget spends what a
 * caller made without each operation having to report it. Forked fibers inherit the counter.
 */
import { Effect, FiberRef } from "effect"

const current = FiberRef.unsafeMake<{ n: number } | undefined>(undefined)

/** Called by the call pipeline once per attempt sent (StripeCall.ts). */
export const countRequest: Effect.Effect<void> = Effect.map(FiberRef.get(current), (box) => {
  if (box !== undefined) box.n++
})

/** Runs `effect`, then hands `spent` the number of requests it sent, whether it succeeded or not. */
export const countingRequests = <A, E, R, R2>(
  effect: Effect.Effect<A, E, R>,
  spent: (requests: number) => Effect.Effect<void, never, R2>
): Effect.Effect<A, E, R | R2> =>
  Effect.suspend(() => {
    const box = { n: 0 }
    return Effect.locally(effect, current, box).pipe(Effect.ensuring(Effect.suspend(() => spent(box.n))))
  })

/**
 * Holds for crash tests (`POST /_emulator/hold`): a matching request waits, before or after Stripe
 * applied it, until the test releases it — the caller never hears back meanwhile.
 */
import { Deferred, Effect } from "effect"
import type { EmulatorContext, HeldRequest, HoldRule } from "../context.js"

/** The first rule with holds left that matches this request, counted as used. */
export const takeHold = (ctx: EmulatorContext, request: { readonly method: string; readonly path: string }): HoldRule | undefined => {
  const rule = ctx.holdRules.find((r) => r.remaining > 0 && r.match(request))
  if (rule) rule.remaining--
  return rule
}

export const hold = (ctx: EmulatorContext, request: { readonly method: string; readonly path: string; readonly applied: boolean }) =>
  Effect.gen(function* () {
    const deferred = yield* Deferred.make<void>()
    const entry: HeldRequest = { ...request, deferred }
    ctx.held.push(entry)
    for (let i = ctx.heldWaiters.length - 1; i >= 0; i--) {
      const w = ctx.heldWaiters[i]!
      if (ctx.held.length >= w.n) {
        ctx.heldWaiters.splice(i, 1)
        yield* Deferred.succeed(w.deferred, undefined)
      }
    }
    yield* Deferred.await(deferred).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          const i = ctx.held.indexOf(entry)
          if (i >= 0) ctx.held.splice(i, 1)
        })
      )
    )
  })

export const releaseHeld = (ctx: EmulatorContext) =>
  Effect.gen(function* () {
    const all = ctx.held.splice(0, ctx.held.length)
    for (const h of all) yield* Deferred.succeed(h.deferred, undefined)
    return all.length
  })

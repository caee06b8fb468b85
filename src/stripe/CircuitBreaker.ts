/**
 * A small circuit breaker over `Ref` + `Clock` (Effect 3 has none).
 *
 * closed ──(N consecutive failures, or failure ratio ≥ r over the window with ≥ minimumCalls)──▶ open
 * open ──(cool-down elapsed; the next call is let through as the single probe)──▶ half_open
 * half_open ──probe succeeds──▶ closed      half_open ──probe fails──▶ open (new cool-down)
 *
 * While open (and while a probe is in flight) calls fail fast, without running, with the error
 * the owner makes from the wait left (`rejected`, e.g. Stripe's `StripeCircuitOpen`). The caller
 * decides which failures count (`isFailure`), e.g. for Stripe only outages and exhausted rate
 * limits (StripeErrorClass.countsAsBreakerFailure); a 400 says Stripe is up.
 */
import { Cause, Clock, Duration, Effect, Exit, Option, Ref } from "effect"

export interface CircuitBreakerSettings {
  /** Opens after this many failures in a row. */
  readonly consecutiveFailures: number
  /** Opens when failures / calls in the window reach this ratio (0 < r ≤ 1)... */
  readonly failureRatio: number
  /** ...over this sliding window (1-second buckets)... */
  readonly window: Duration.DurationInput
  /** ...once at least this many calls were seen in it. */
  readonly minimumCalls: number
  /** Time spent open before a probe is let through. */
  readonly cooldown: Duration.DurationInput
}

export const defaultCircuitBreakerSettings: CircuitBreakerSettings = {
  consecutiveFailures: 5,
  failureRatio: 0.5,
  window: "60 seconds",
  minimumCalls: 20,
  cooldown: "30 seconds"
}

export type CircuitStateName = "closed" | "open" | "half_open"

/** Numeric encoding for the `flexprice_stripe_circuit_state` gauge. */
export const circuitStateValue = (s: CircuitStateName): number => (s === "closed" ? 0 : s === "half_open" ? 1 : 2)

interface Bucket {
  readonly second: number
  readonly calls: number
  readonly failures: number
}

type State =
  | { readonly _tag: "closed"; readonly consecutive: number; readonly buckets: ReadonlyArray<Bucket> }
  | { readonly _tag: "open"; readonly until: number }
  | { readonly _tag: "half_open"; readonly probing: boolean }

const closed: State = { _tag: "closed", consecutive: 0, buckets: [] }

export interface CircuitBreaker<Rejected> {
  /** Runs `self` unless the breaker is open; records its outcome (`isFailure`: counts against it). */
  readonly protect: <A, E, R>(
    self: Effect.Effect<A, E, R>,
    isFailure: (error: E) => boolean
  ) => Effect.Effect<A, E | Rejected, R>
  readonly state: Effect.Effect<CircuitStateName>
}

type Admission =
  | { readonly _tag: "reject"; readonly retryInMs: number }
  | { readonly _tag: "normal" }
  | { readonly _tag: "probe" }

/** `rejected` builds the failure of a call refused while open, from the wait left (ms). */
export const make = <Rejected>(
  settings: CircuitBreakerSettings,
  onTransition: (from: CircuitStateName, to: CircuitStateName) => Effect.Effect<void>,
  rejected: (retryInMs: number) => Rejected
): Effect.Effect<CircuitBreaker<Rejected>> =>
  Effect.gen(function* () {
    const ref = yield* Ref.make<State>(closed)
    const cooldownMs = Duration.toMillis(Duration.decode(settings.cooldown))
    const windowSeconds = Math.max(1, Math.ceil(Duration.toSeconds(Duration.decode(settings.window))))

    const transition = (from: State, to: State) =>
      from._tag === to._tag ? Effect.void : onTransition(from._tag, to._tag)

    const admit = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Ref.modify(ref, (s): [[Admission, State, State], State] => {
        switch (s._tag) {
          case "closed":
            return [[{ _tag: "normal" }, s, s], s]
          case "open": {
            if (now < s.until) return [[{ _tag: "reject", retryInMs: s.until - now }, s, s], s]
            const next: State = { _tag: "half_open", probing: true }
            return [[{ _tag: "probe" }, s, next], next]
          }
          case "half_open": {
            if (s.probing) return [[{ _tag: "reject", retryInMs: 0 }, s, s], s]
            const next: State = { _tag: "half_open", probing: true }
            return [[{ _tag: "probe" }, s, next], next]
          }
        }
      }).pipe(Effect.tap(([, from, to]) => transition(from, to)), Effect.map(([a]) => a))
    )

    const record = (admission: "normal" | "probe", failed: boolean | "interrupted") =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.modify(ref, (s): [[State, State], State] => {
          if (admission === "probe") {
            if (s._tag !== "half_open") return [[s, s], s]
            const next: State =
              failed === "interrupted"
                ? { _tag: "half_open", probing: false }
                : failed
                  ? { _tag: "open", until: now + cooldownMs }
                  : closed
            return [[s, next], next]
          }
          // A call admitted while closed that finishes after the breaker moved on says nothing new.
          if (s._tag !== "closed" || failed === "interrupted") return [[s, s], s]
          const second = Math.floor(now / 1000)
          const kept = s.buckets.filter((b) => b.second > second - windowSeconds)
          const last = kept[kept.length - 1]
          const buckets =
            last !== undefined && last.second === second
              ? [...kept.slice(0, -1), { second, calls: last.calls + 1, failures: last.failures + (failed ? 1 : 0) }]
              : [...kept, { second, calls: 1, failures: failed ? 1 : 0 }]
          const consecutive = failed ? s.consecutive + 1 : 0
          let calls = 0
          let failures = 0
          for (const b of buckets) {
            calls += b.calls
            failures += b.failures
          }
          const trip =
            consecutive >= settings.consecutiveFailures ||
            (calls >= settings.minimumCalls && failures / calls >= settings.failureRatio)
          const next: State = trip ? { _tag: "open", until: now + cooldownMs } : { _tag: "closed", consecutive, buckets }
          return [[s, next], next]
        }).pipe(Effect.flatMap(([from, to]) => transition(from, to)))
      )

    const protect = <A, E, R>(self: Effect.Effect<A, E, R>, isFailure: (error: E) => boolean) =>
      Effect.flatMap(admit, (admission): Effect.Effect<A, E | Rejected, R> => {
        if (admission._tag === "reject") return Effect.fail(rejected(admission.retryInMs))
        return self.pipe(
          Effect.onExit((exit) =>
            record(
              admission._tag,
              Exit.isSuccess(exit)
                ? false
                : Exit.isInterrupted(exit)
                  ? "interrupted"
                  : Option.match(Cause.failureOption(exit.cause), { onNone: () => true, onSome: isFailure })
            )
          )
        )
      })

    const state = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.map(Ref.get(ref), (s): CircuitStateName => (s._tag === "open" && now >= s.until ? "half_open" : s._tag))
    )

    return { protect, state }
  })

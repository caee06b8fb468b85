/**
 * Per-tenant Stripe resources, each made on first use and shared by every call after it:
 *  - the tenant's budget: API rate limiter (live or test limits), meter event stream limiter,
 *    FIFO semaphores of in-flight requests (one per host: the stream host has its own budget),
 *    circuit breaker, and its v2 meter event session;
 *  - v1 keyed locks: one in-flight v1 meter event per (tenant, event name, customer).
 * Both are `RcMap`s: concurrent first calls share one creation, which runs in the entry's own
 * scope whatever happens to the caller. Tenant budgets live as long as the client
 * (`idleTimeToLive: infinity`); a key lock is dropped when its last user is done.
 */
import { Data, Duration, Effect, Metric, Option, RateLimiter, RcMap, type Redacted, type Scope, SynchronizedRef } from "effect"
import * as CircuitBreaker from "./CircuitBreaker.js"
import * as FifoSemaphore from "./FifoSemaphore.js"
import type { StripeAccountRef } from "./StripeClient.js"
import { StripeCircuitOpen } from "./StripeErrors.js"
import * as StripeMetrics from "./StripeMetrics.js"
import type { StripeClientSettings } from "./StripeSettings.js"

export interface Session {
  readonly token: Redacted.Redacted<string>
  readonly expiresAtMs: number
  readonly keyHash: string
}

export interface TenantState {
  readonly limiter: RateLimiter.RateLimiter
  readonly limiterName: string
  readonly streamLimiter: RateLimiter.RateLimiter
  /** in-flight requests to the API host */
  readonly semaphore: FifoSemaphore.FifoSemaphore
  /** in-flight requests to the meter events host */
  readonly streamSemaphore: FifoSemaphore.FifoSemaphore
  readonly breaker: CircuitBreaker.CircuitBreaker<StripeCircuitOpen>
  readonly session: SynchronizedRef.SynchronizedRef<Option.Option<Session>>
}

/** Budgets are per tenant key and mode: live and test keys have different Stripe limits. */
class TenantKey extends Data.Class<{ readonly tenantKey: string; readonly livemode: boolean }> {}

const createTenant = (settings: StripeClientSettings, { livemode, tenantKey }: TenantKey) =>
  Effect.gen(function* () {
    const perSecond = livemode ? settings.rateLimitLivePerSecond : settings.rateLimitTestPerSecond
    const limiter = yield* RateLimiter.make({ limit: perSecond, interval: "1 second", algorithm: "token-bucket" })
    const streamLimiter = yield* RateLimiter.make({
      limit: settings.meterStreamRateLimitPerSecond,
      interval: "1 second",
      algorithm: "token-bucket"
    })
    const gauge = StripeMetrics.tagged(StripeMetrics.circuitState, { tenant: tenantKey })
    yield* Metric.set(gauge, 0)
    const breaker = yield* CircuitBreaker.make(
      settings.breaker,
      (from, to) =>
        Effect.all(
          [
            Metric.set(gauge, CircuitBreaker.circuitStateValue(to)),
            Metric.increment(StripeMetrics.tagged(StripeMetrics.circuitTransitionsTotal, { to })),
            (to === "open" ? Effect.logWarning : Effect.logInfo)("stripe circuit breaker transition").pipe(
              Effect.annotateLogs({ tenant: tenantKey, from, to })
            )
          ],
          { discard: true }
        ),
      (retryInMs) => new StripeCircuitOpen({ retryInMs })
    )
    return {
      limiter,
      limiterName: livemode ? "api_live" : "api_test",
      streamLimiter,
      // FIFO hand-off: thousands of queued calls must not each wake on every release.
      semaphore: FifoSemaphore.unsafeMake(settings.maxConcurrency),
      streamSemaphore: FifoSemaphore.unsafeMake(settings.meterStreamMaxConcurrency),
      breaker,
      session: yield* SynchronizedRef.make(Option.none<Session>())
    } satisfies TenantState
  })

export interface StripeTenants {
  /** Runs `use` with the tenant's resources (made on first use). */
  readonly withTenant: <A, E, R>(ref: StripeAccountRef, use: (tenant: TenantState) => Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Runs `self` alone among the calls holding the same key. */
  readonly withKeyLock: <A, E, R>(key: string, self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export const make = (settings: StripeClientSettings): Effect.Effect<StripeTenants, never, Scope.Scope> =>
  Effect.gen(function* () {
    const tenants = yield* RcMap.make({
      lookup: (key: TenantKey) => createTenant(settings, key),
      idleTimeToLive: Duration.infinity
    })
    const locks = yield* RcMap.make({ lookup: (_: string) => FifoSemaphore.make(1) })

    const withTenant = <A, E, R>(ref: StripeAccountRef, use: (tenant: TenantState) => Effect.Effect<A, E, R>) =>
      Effect.scoped(Effect.flatMap(RcMap.get(tenants, new TenantKey({ tenantKey: ref.tenantKey, livemode: ref.livemode })), use))

    const withKeyLock = <A, E, R>(key: string, self: Effect.Effect<A, E, R>) =>
      Effect.scoped(Effect.flatMap(RcMap.get(locks, key), (semaphore) => semaphore.withPermit(self)))

    return { withTenant, withKeyLock } satisfies StripeTenants
  })

/**
 * The v2 meter event stream (https://docs.stripe.com/api/v2/billing-meter-stream): requests
 * authenticate with a short-lived session token from POST /v2/billing/meter_event_session, not
 * with the API key. One session per tenant, created on first use and refreshed when it is for
 * another key, within the refresh margin of its expiry, or when Stripe answers that it expired
 * (then the chunk is sent once more with the fresh token).
 */
import { Array as Arr, Clock, Effect, Metric, Option, Redacted, SynchronizedRef } from "effect"
import type Stripe from "stripe"
import { type Execute, ops, plain } from "./StripeCall.js"
import type { MeterEvent, MeterStreamResult, StripeAccountRef } from "./StripeClient.js"
import type { StripeError } from "./StripeErrors.js"
import * as StripeMetrics from "./StripeMetrics.js"
import type { Session, StripeTenants, TenantState } from "./StripeTenants.js"

const { tagged } = StripeMetrics

type StreamParams = Parameters<Stripe["v2"]["billing"]["meterEventStream"]["create"]>[0]

/** Events per stream request (Stripe's limit). */
const STREAM_CHUNK = 100

export interface MeterEventSessionDeps {
  readonly execute: Execute
  readonly tenants: StripeTenants
  readonly refreshMarginMs: number
  /** Identifies the key a session was made with, without keeping the key. */
  readonly keyHash: (key: Redacted.Redacted<string>) => string
}

export const make = ({ execute, keyHash, refreshMarginMs, tenants }: MeterEventSessionDeps) => {
  /**
   * The tenant's session, created or refreshed when missing, for another key, within the
   * refresh margin of its expiry, or equal to `stale` (the token Stripe just said expired).
   */
  const sessionFor = (ref: StripeAccountRef, tenant: TenantState, stale?: Redacted.Redacted<string>): Effect.Effect<Session, StripeError> =>
    // Lock-free read first: concurrent chunk sends must not queue on the refresh lock.
    Effect.flatMap(Effect.all([SynchronizedRef.get(tenant.session), Clock.currentTimeMillis]), ([current, now]) =>
      stale === undefined &&
      Option.isSome(current) &&
      current.value.keyHash === keyHash(ref.apiKey) &&
      now < current.value.expiresAtMs - refreshMarginMs
        ? Effect.succeed(current.value)
        : refreshSession(ref, tenant, stale)
    )

  const refreshSession = (ref: StripeAccountRef, tenant: TenantState, stale?: Redacted.Redacted<string>): Effect.Effect<Session, StripeError> =>
    SynchronizedRef.modifyEffect(tenant.session, (current) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const hash = keyHash(ref.apiKey)
        const reason = Option.match(current, {
          onNone: () => "initial" as const,
          onSome: (s) =>
            s.keyHash !== hash
              ? ("initial" as const)
              : stale !== undefined && Redacted.value(s.token) === Redacted.value(stale)
                ? ("expired" as const)
                : now >= s.expiresAtMs - refreshMarginMs
                  ? ("expiring" as const)
                  : undefined
        })
        if (reason === undefined && Option.isSome(current)) return [current.value, current] as const
        const created = yield* plain(
          execute(ref, ops.createSession, (sdk) => sdk.api.v2.billing.meterEventSession.create(), {
            attributes: { "stripe.session_reason": reason ?? "initial" }
          })
        )
        yield* Metric.increment(tagged(StripeMetrics.sessionRefreshesTotal, { reason: reason ?? "initial" }))
        // Lifetime by Stripe's own clock (expires_at − created), placed on ours: immune to skew.
        const expires = Date.parse(created.expires_at)
        const createdAt = Date.parse(created.created)
        const lifetime = Number.isFinite(expires)
          ? Number.isFinite(createdAt)
            ? expires - createdAt
            : expires - now
          : 15 * 60_000
        const session: Session = {
          token: Redacted.make(created.authentication_token),
          expiresAtMs: now + Math.max(0, lifetime),
          keyHash: hash
        }
        return [session, Option.some(session)] as const
      })
    )

  const sendChunk = (ref: StripeAccountRef, chunk: ReadonlyArray<MeterEvent>) =>
    tenants.withTenant(ref, (tenant) =>
      Effect.gen(function* () {
        const params: StreamParams = {
          events: chunk.map((e) => ({
            event_name: e.eventName,
            identifier: e.identifier,
            payload: { ...e.payload },
            timestamp: e.timestamp.toISOString()
          }))
        }
        const send = (session: Session) =>
          execute(
            ref,
            ops.streamEvents,
            (sdk) => sdk.meterEvents.v2.billing.meterEventStream.create(params, { apiKey: Redacted.value(session.token) }),
            { attributes: { "stripe.events": chunk.length }, extraSecrets: [session.token] }
          )
        const first = yield* sessionFor(ref, tenant)
        yield* send(first).pipe(
          Effect.catchTag("SessionExpired", () =>
            Effect.gen(function* () {
              yield* Metric.increment(tagged(StripeMetrics.retriesTotal, { endpoint: ops.streamEvents.endpoint, reason: "session_expired" }))
              const fresh = yield* sessionFor(ref, tenant, first.token)
              return yield* plain(send(fresh))
            })
          )
        )
        yield* Metric.incrementBy(tagged(StripeMetrics.meterEventsTotal, { transport: "stream", outcome: "delivered" }), chunk.length)
      })
    )

  /** ≤ 100 events a request; chunks go one at a time unless `concurrency` > 1. */
  const sendMeterEventsStream = Effect.fn("MeterEventSession.send", { captureStackTrace: false })(function* (
    ref: StripeAccountRef,
    events: ReadonlyArray<MeterEvent>,
    options?: { readonly concurrency?: number }
  ) {
    yield* Effect.annotateCurrentSpan({ "stripe.tenant": ref.tenantKey, "stripe.events": events.length, "stripe.transport": "stream" })
    const chunks = Arr.chunksOf(events, STREAM_CHUNK)
    yield* Effect.forEach(chunks, (chunk) => sendChunk(ref, chunk), {
      concurrency: Math.max(1, options?.concurrency ?? 1),
      discard: true
    })
    return { requests: chunks.length, events: events.length } satisfies MeterStreamResult
  })

  return { sendMeterEventsStream } as const
}

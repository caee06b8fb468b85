/**
 * One logical Stripe call, as one composable function (`execute`):
 *
 *   span → metrics → [key lock] → breaker → [recover] → retry policy
 *     → per attempt: the host's tenant semaphore → rate limiter → SDK request (timeout, error mapping)
 *
 * The semaphore is taken per attempt, so a call sleeping between retries holds no permit; the
 * limiter token is taken right before the request, so retries are paced like any other request.
 * The SDK never retries on its own (`maxNetworkRetries: 0` plus `StripeHttpClient`).
 */
import { Cause, Clock, Duration, Effect, Exit, Metric, Option, Redacted } from "effect"
import type Stripe from "stripe"
import { traceHeaders } from "../observability/TraceContext.js"
import { countsAsBreakerFailure, httpStatusOf, outcomeOf, requestIdOf } from "./StripeErrorClass.js"
import { fromSdkError, type SessionExpired, type StripeError, StripeUnavailable } from "./StripeErrors.js"
import { outgoingHeaders } from "./StripeHttpClient.js"
import { countRequest } from "./RequestCount.js"
import * as StripeMetrics from "./StripeMetrics.js"
import * as StripeRetry from "./StripeRetry.js"
import type { StripeAccountRef } from "./StripeClient.js"
import type { StripeTenants } from "./StripeTenants.js"

const { tagged } = StripeMetrics

/** The SDK instances of one key: the API host and the meter events host. */
export interface SdkPair {
  readonly api: Stripe
  readonly meterEvents: Stripe
}

export interface Operation {
  /** Span name suffix: `stripe.<name>`. */
  readonly name: string
  /** Route template for metrics and spans, e.g. "POST /v1/billing/meter_events". */
  readonly endpoint: string
  readonly host: "api" | "meter_events"
  /**
   * Resending is safe whatever Stripe did with an earlier attempt (meter events: Stripe dedups
   * by identifier; a session: a spare one is harmless), so a 5xx is retried — under a new
   * Idempotency-Key — even under `Stripe-Should-Retry: false`
   * (StripeErrorClass.isRetryableUnavailableResendSafe).
   */
  readonly resendSafe?: boolean
}

export const ops = {
  retrieveAccount: { name: "retrieve_account", endpoint: "GET /v1/account", host: "api" },
  retrieveCustomer: { name: "retrieve_customer", endpoint: "GET /v1/customers/:id", host: "api" },
  listCustomers: { name: "list_customers", endpoint: "GET /v1/customers", host: "api" },
  retrieveMeter: { name: "retrieve_meter", endpoint: "GET /v1/billing/meters/:id", host: "api" },
  listMeters: { name: "list_meters", endpoint: "GET /v1/billing/meters", host: "api" },
  meterEventV1: { name: "create_meter_event", endpoint: "POST /v1/billing/meter_events", host: "api", resendSafe: true },
  // A session is only a short-lived token (https://docs.stripe.com/api/v2/billing-meter-stream):
  // a retry that creates a second one bills nothing, so a 500 saved under the first request's key
  // is retried as a new request.
  createSession: {
    name: "create_meter_event_session",
    endpoint: "POST /v2/billing/meter_event_session",
    host: "api",
    resendSafe: true
  },
  streamEvents: {
    name: "send_meter_event_stream",
    endpoint: "POST /v2/billing/meter_event_stream",
    host: "meter_events",
    resendSafe: true
  },
  retrieveV2Event: { name: "retrieve_v2_event", endpoint: "GET /v2/core/events/:id", host: "api" },
  listSummaries: {
    name: "list_meter_event_summaries",
    endpoint: "GET /v1/billing/meters/:id/event_summaries",
    host: "api"
  }
} as const satisfies Record<string, Operation>

export interface CallOptions<A, B> {
  readonly attributes?: Record<string, string | number | boolean>
  /** More secrets to scrub from error texts (a session token). */
  readonly extraSecrets?: ReadonlyArray<Redacted.Redacted<string>>
  /** Turns some failures into results (a duplicate meter event). */
  readonly recover?: (e: StripeError) => Option.Option<B>
  /** Outcome label of a success. */
  readonly outcome?: (b: A | B) => string
  /** Key lock: calls with the same key never overlap. */
  readonly lock?: string
}

export type Execute = <A, B = A>(
  ref: StripeAccountRef,
  op: Operation,
  /** Runs once per attempt (a resend-safe call makes a new Idempotency-Key each time). */
  run: (sdk: SdkPair) => Promise<A>,
  options?: CallOptions<A, B>
) => Effect.Effect<A | B, StripeError | SessionExpired>

export interface CallPipelineDeps {
  /** SDK timeout (ms); an attempt is bounded at this plus 5 s. */
  readonly timeoutMs: number
  /** `standard` for every call, `resendSafe` for operations marked so (see Operation). */
  readonly retryPolicies: {
    readonly standard: ReturnType<typeof StripeRetry.policy>
    readonly resendSafe: ReturnType<typeof StripeRetry.policy>
  }
  readonly tenants: StripeTenants
  readonly sdkFor: (key: Redacted.Redacted<string>) => SdkPair
}

const lastResponseOf = (a: unknown): { statusCode?: number; requestId?: string } => {
  if (a === null || typeof a !== "object") return {}
  const lr = (a as { lastResponse?: { statusCode?: unknown; requestId?: unknown } }).lastResponse
  if (lr === undefined) return {}
  return {
    statusCode: typeof lr.statusCode === "number" ? lr.statusCode : undefined,
    requestId: typeof lr.requestId === "string" ? lr.requestId : undefined
  }
}

const exitFailure = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/** Calls that can never see a session error: anything else is a bug in the mapping. */
export const plain = <A>(self: Effect.Effect<A, StripeError | SessionExpired>): Effect.Effect<A, StripeError> =>
  Effect.catchTag(self, "SessionExpired", (e) =>
    Effect.fail(new StripeUnavailable({ reason: "session_expired", status: 401, requestId: e.requestId }))
  )

/**
 * One logical Stripe call: span, metrics, breaker, retries, semaphore, limiter, timeout,
 * error mapping.
 */
export const makeExecute =
  ({ retryPolicies, sdkFor, tenants, timeoutMs }: CallPipelineDeps): Execute =>
  <A, B = A>(
    ref: StripeAccountRef,
    op: Operation,
    run: (sdk: SdkPair) => Promise<A>,
    options: CallOptions<A, B> = {}
  ) =>
    tenants
      .withTenant(ref, (tenant) =>
        Effect.gen(function* () {
          const sdk = sdkFor(ref.apiKey)
          const secrets = [Redacted.value(ref.apiKey), ...(options.extraSecrets ?? []).map(Redacted.value)]
          const limiter = op.host === "api" ? tenant.limiter : tenant.streamLimiter
          const limiterName = op.host === "api" ? tenant.limiterName : "meter_events"
          const semaphore = op.host === "api" ? tenant.semaphore : tenant.streamSemaphore
          const started = yield* Clock.currentTimeMillis
          let attempts = 0
          let lastStatus: number | undefined
          let lastRequestId: string | undefined

          const attempt: Effect.Effect<A, StripeError | SessionExpired> = semaphore.withPermit(
            Effect.gen(function* () {
              attempts++
              const n = attempts
              const waitStart = yield* Clock.currentTimeMillis
              const waitEnd = yield* limiter(Clock.currentTimeMillis)
              yield* Metric.update(tagged(StripeMetrics.rateLimiterWait, { limiter: limiterName }), (waitEnd - waitStart) / 1000)
              const trace = yield* traceHeaders
              const result = yield* Effect.tryPromise({ try: () => outgoingHeaders.run(trace, () => run(sdk)), catch: (u) => u }).pipe(
                Effect.timeoutFail({
                  // The SDK's timeout is per socket inactivity; this bounds the whole attempt.
                  duration: Duration.millis(timeoutMs + 5_000),
                  onTimeout: () => new StripeUnavailable({ reason: "timeout", detail: "attempt exceeded the client timeout" })
                }),
                Effect.catchAll((u) => {
                  if (u instanceof StripeUnavailable) return Effect.fail(u)
                  // Retry-After is relative to the clock the retry schedule runs on.
                  return Effect.flatMap(Clock.currentTimeMillis, (nowMs) => {
                    const mapped = fromSdkError(u, { secrets, nowMs })
                    return mapped === undefined
                      ? Effect.die(new Error(`unexpected failure in Stripe SDK call ${op.name}`))
                      : Effect.fail(mapped)
                  })
                }),
                Effect.onExit((exit) => {
                  const failure = exitFailure(exit)
                  const status = Exit.isSuccess(exit)
                    ? (lastResponseOf(exit.value).statusCode ?? 200)
                    : failure !== undefined
                      ? httpStatusOf(failure)
                      : undefined
                  lastStatus = status
                  lastRequestId = Exit.isSuccess(exit)
                    ? lastResponseOf(exit.value).requestId
                    : failure !== undefined
                      ? requestIdOf(failure)
                      : undefined
                  return Effect.all(
                    [
                      countRequest,
                      Metric.increment(
                        tagged(StripeMetrics.requestsTotal, {
                          endpoint: op.endpoint,
                          status_class: StripeMetrics.statusClass(status)
                        })
                      ),
                      Effect.annotateCurrentSpan({
                        "stripe.attempt": n,
                        ...(status !== undefined ? { "http.status_code": status } : {}),
                        ...(lastRequestId !== undefined ? { "stripe.request_id": lastRequestId } : {})
                      })
                    ],
                    { discard: true }
                  )
                }),
                Effect.withSpan(`stripe.${op.name}.attempt`, {
                  attributes: { "stripe.attempt": n },
                  captureStackTrace: false
                })
              )
              return result
            })
          )

          const retried = attempt.pipe(
            StripeRetry.applyPolicies(op.resendSafe === true ? retryPolicies.resendSafe : retryPolicies.standard, (reason, e) =>
              Effect.all(
                [
                  Metric.increment(tagged(StripeMetrics.retriesTotal, { endpoint: op.endpoint, reason })),
                  Effect.logDebug("stripe call will be retried").pipe(
                    Effect.annotateLogs({
                      operation: op.name,
                      tenant: ref.tenantKey,
                      reason,
                      error: e._tag,
                      attempt: attempts
                    })
                  )
                ],
                { discard: true }
              )
            )
          )

          const recovered: Effect.Effect<A | B, StripeError | SessionExpired> = options.recover
            ? Effect.catchIf(
                retried,
                (e): e is StripeError => e._tag !== "SessionExpired" && Option.isSome(options.recover!(e as StripeError)),
                (e) => Effect.succeed(Option.getOrThrow(options.recover!(e)))
              )
            : retried

          const guarded = tenant.breaker.protect(recovered, countsAsBreakerFailure)
          const locked = options.lock !== undefined ? tenants.withKeyLock(options.lock, guarded) : guarded

          return yield* locked.pipe(
            Effect.onExit((exit) =>
              Effect.gen(function* () {
                const ended = yield* Clock.currentTimeMillis
                const failure = exitFailure(exit)
                const outcome = Exit.isSuccess(exit)
                  ? (options.outcome?.(exit.value) ?? "success")
                  : failure !== undefined
                    ? outcomeOf(failure)
                    : Exit.isInterrupted(exit)
                      ? "interrupted"
                      : "defect"
                const status = failure?._tag === "StripeCircuitOpen" ? undefined : lastStatus
                yield* Metric.increment(
                  tagged(StripeMetrics.callsTotal, {
                    endpoint: op.endpoint,
                    status_class: attempts === 0 ? "none" : StripeMetrics.statusClass(status),
                    outcome
                  })
                )
                yield* Metric.update(tagged(StripeMetrics.callDuration, { endpoint: op.endpoint, outcome }), (ended - started) / 1000)
                yield* Effect.annotateCurrentSpan({
                  "stripe.outcome": outcome,
                  "stripe.attempts": attempts,
                  ...(status !== undefined ? { "http.status_code": status } : {}),
                  ...(lastRequestId !== undefined ? { "stripe.request_id": lastRequestId } : {}),
                  ...(failure !== undefined ? { "stripe.error_tag": failure._tag } : {})
                })
              })
            )
          )
        })
      )
      .pipe(
        // withSpan, not Effect.fn: the name is computed per operation (`stripe.<call>`, the
        // names Jaeger users search by), and Effect.fn takes a literal fixed at definition.
        Effect.withSpan(`stripe.${op.name}`, {
          kind: "client",
          // Stack capture per span costs a noticeable share of a v1 call; the span name says where.
          captureStackTrace: false,
          attributes: {
            "stripe.endpoint": op.endpoint,
            "stripe.tenant": ref.tenantKey,
            "stripe.livemode": ref.livemode,
            ...options.attributes
          }
        })
      )

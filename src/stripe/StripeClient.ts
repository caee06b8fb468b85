/**
 * StripeClient: every Stripe call the product makes, over the official `stripe` SDK, with
 * per-tenant back-pressure and typed failures.
 *
 * One call = breaker check → [retry policy → (tenant semaphore → rate limiter → one HTTP attempt)].
 * The semaphore is taken per attempt, so a call sleeping between retries holds no permit; the
 * limiter token is taken right before the request, so retries are paced like any other request.
 * The SDK never retries on its own (`maxNetworkRetries: 0` plus `StripeHttpClient`).
 */
import { createHash } from "node:crypto"
import {
  Array as Arr,
  Cause,
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberId,
  Layer,
  Metric,
  MetricLabel,
  Option,
  RateLimiter,
  Redacted,
  Scope,
  Stream,
  SynchronizedRef
} from "effect"
import Stripe from "stripe"
import { normalize } from "../domain/Decimal.js"
import * as CircuitBreaker from "./CircuitBreaker.js"
import * as FifoSemaphore from "./FifoSemaphore.js"
import {
  fromSdkError,
  isDuplicateMeterEvent,
  SessionExpired,
  type StripeError,
  StripeUnavailable
} from "./StripeErrors.js"
import { makeStripeHttpClient, outgoingHeaders } from "./StripeHttpClient.js"
import { traceHeaders } from "../observability/Telemetry.js"
import * as StripeMetrics from "./StripeMetrics.js"
import * as StripeRetry from "./StripeRetry.js"
import {
  makeSettings,
  type StripeClientSettings,
  type StripeClientSettingsInput,
  settingsConfig
} from "./StripeSettings.js"

// ---------------------------------------------------------------------------------------------
// Public data types

/** Which Stripe account a call is for, and whose budget (limiter, semaphore, breaker) it spends. */
export interface StripeAccountRef {
  /** Tenant/environment id used to bucket limiter, semaphore, breaker and session. Not secret. */
  readonly tenantKey: string
  readonly apiKey: Redacted.Redacted<string>
  /** Sizes the rate limiter (live vs test limits). */
  readonly livemode: boolean
}

export interface StripeAccountInfo {
  readonly id: string
  readonly livemode: boolean
  readonly displayName: string | null
}

export interface StripeCustomer {
  readonly id: string
  readonly email: string | null
  readonly name: string | null
  readonly metadata: Readonly<Record<string, string>>
  /** Unix seconds. */
  readonly created: number
  readonly deleted: boolean
}

export interface StripeCustomerPage {
  readonly customers: ReadonlyArray<StripeCustomer>
  /** Cursor to resume after this page (the last customer id), or the incoming cursor on an empty page. */
  readonly lastId: string | undefined
  readonly hasMore: boolean
}

export interface StripeMeter {
  readonly id: string
  readonly eventName: string
  readonly displayName: string
  readonly status: "active" | "inactive" | (string & {})
  readonly customerPayloadKey: string
  readonly valuePayloadKey: string
  /** `last` is what MAX/LATEST meters need; anything else Stripe may add comes through as is. */
  readonly formula: "count" | "sum" | "last" | (string & {})
}

export interface MeterEvent {
  readonly eventName: string
  /** Deterministic; also the v1 Idempotency-Key. ≤ 100 characters. */
  readonly identifier: string
  readonly timestamp: Date
  /** Customer and value payload keys; the value is a decimal string. */
  readonly payload: Readonly<Record<string, string>>
}

export type MeterEventOutcome = "delivered" | "duplicate"

export interface MeterStreamResult {
  /** HTTP requests made to the stream endpoint (session creations not included). */
  readonly requests: number
  readonly events: number
}

export interface MeterEventSummary {
  readonly startTime: Date
  readonly endTime: Date
  /** Exact decimal string as Stripe wrote it. */
  readonly aggregatedValue: string
}

export interface MeterEventSummaryQuery {
  readonly meterId: string
  readonly customer: string
  /** Minute-aligned. */
  readonly startTime: Date
  /** Minute-aligned, exclusive. */
  readonly endTime: Date
}

export interface StripeClientService {
  /** GET /v1/account — connection test. */
  readonly retrieveAccount: (ref: StripeAccountRef) => Effect.Effect<StripeAccountInfo, StripeError>
  /** GET /v1/customers/:id (a deleted customer comes back with `deleted: true`). */
  readonly retrieveCustomer: (ref: StripeAccountRef, customerId: string) => Effect.Effect<StripeCustomer, StripeError>
  /** Pages of 100, newest first, from `startingAfter` (exclusive) on. Lazy: one request per pulled page. */
  readonly streamCustomerPages: (
    ref: StripeAccountRef,
    startingAfter?: string
  ) => Stream.Stream<StripeCustomerPage, StripeError>
  /** Every customer, one at a time, never all in memory. */
  readonly streamCustomers: (ref: StripeAccountRef) => Stream.Stream<StripeCustomer, StripeError>
  readonly retrieveMeter: (ref: StripeAccountRef, meterId: string) => Effect.Effect<StripeMeter, StripeError>
  readonly listMeters: (ref: StripeAccountRef) => Effect.Effect<ReadonlyArray<StripeMeter>, StripeError>
  /**
   * v2 meter event stream: ≤ 100 events a request; chunks go one at a time unless
   * `concurrency` > 1 (still bounded by the tenant semaphore). On failure the chunks sent before
   * were accepted; re-sending all events is safe (identifier dedup, 24 h).
   */
  readonly sendMeterEventsStream: (
    ref: StripeAccountRef,
    events: ReadonlyArray<MeterEvent>,
    options?: { readonly concurrency?: number }
  ) => Effect.Effect<MeterStreamResult, StripeError>
  /**
   * v1 POST /v1/billing/meter_events, Idempotency-Key = identifier. Calls for the same
   * (event name, customer) never overlap. `customerPayloadKey` defaults to `stripe_customer_id`.
   */
  readonly sendMeterEventV1: (
    ref: StripeAccountRef,
    event: MeterEvent,
    options?: { readonly customerPayloadKey?: string }
  ) => Effect.Effect<MeterEventOutcome, StripeError>
  /** Hourly summaries for one customer and meter over [startTime, endTime), oldest first. */
  readonly listMeterEventSummaries: (
    ref: StripeAccountRef,
    query: MeterEventSummaryQuery
  ) => Effect.Effect<ReadonlyArray<MeterEventSummary>, StripeError>
  /** The tenant's breaker state (for /v1/stripe/sync/status and tests). */
  readonly circuitState: (ref: StripeAccountRef) => Effect.Effect<CircuitBreaker.CircuitStateName>
}

export class StripeClient extends Context.Tag("flexprice/StripeClient")<StripeClient, StripeClientService>() {
  /** From STRIPE_* environment variables (see StripeSettings.settingsConfig). */
  static readonly layer: Layer.Layer<StripeClient, import("effect/ConfigError").ConfigError> = Layer.scoped(
    StripeClient,
    Effect.flatMap(settingsConfig, (s) => makeStripeClient(s))
  )
  /** From explicit settings, e.g. `StripeClient.layerWith(emulatorSettings(emulator.url, {...}))`. */
  static readonly layerWith = (settings: StripeClientSettingsInput): Layer.Layer<StripeClient> =>
    Layer.scoped(StripeClient, makeStripeClient(makeSettings(settings)))
}

// ---------------------------------------------------------------------------------------------
// Internals

interface SdkPair {
  readonly api: Stripe
  readonly meterEvents: Stripe
}

interface Session {
  readonly token: Redacted.Redacted<string>
  readonly expiresAtMs: number
  readonly keyHash: string
}

interface TenantState {
  readonly limiter: RateLimiter.RateLimiter
  readonly limiterName: string
  readonly streamLimiter: RateLimiter.RateLimiter
  readonly semaphore: FifoSemaphore.FifoSemaphore
  readonly breaker: CircuitBreaker.CircuitBreaker
  readonly session: SynchronizedRef.SynchronizedRef<Option.Option<Session>>
}

interface Operation {
  /** Span name suffix: `stripe.<name>`. */
  readonly name: string
  /** Route template for metrics and spans, e.g. "POST /v1/billing/meter_events". */
  readonly endpoint: string
  readonly host: "api" | "meter_events"
}

const ops = {
  retrieveAccount: { name: "retrieve_account", endpoint: "GET /v1/account", host: "api" },
  retrieveCustomer: { name: "retrieve_customer", endpoint: "GET /v1/customers/:id", host: "api" },
  listCustomers: { name: "list_customers", endpoint: "GET /v1/customers", host: "api" },
  retrieveMeter: { name: "retrieve_meter", endpoint: "GET /v1/billing/meters/:id", host: "api" },
  listMeters: { name: "list_meters", endpoint: "GET /v1/billing/meters", host: "api" },
  meterEventV1: { name: "create_meter_event", endpoint: "POST /v1/billing/meter_events", host: "api" },
  createSession: { name: "create_meter_event_session", endpoint: "POST /v2/billing/meter_event_session", host: "api" },
  streamEvents: {
    name: "send_meter_event_stream",
    endpoint: "POST /v2/billing/meter_event_stream",
    host: "meter_events"
  },
  listSummaries: {
    name: "list_meter_event_summaries",
    endpoint: "GET /v1/billing/meters/:id/event_summaries",
    host: "api"
  }
} as const satisfies Record<string, Operation>

type StreamParams = Parameters<Stripe["v2"]["billing"]["meterEventStream"]["create"]>[0]

const STREAM_CHUNK = 100
const PAGE_LIMIT = 100

const keyHash = (key: Redacted.Redacted<string>): string =>
  createHash("sha256").update("flexprice-stripe-sdk:").update(Redacted.value(key)).digest("hex").slice(0, 32)

const hostOf = (base: string) => {
  const u = new URL(base)
  const protocol = u.protocol === "http:" ? "http" : "https"
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: u.port !== "" ? u.port : protocol === "http" ? "80" : "443",
    protocol
  } as const
}

// Tagged metric instances are cached: building one per call (labels, key, hash) showed in profiles.
const taggedCache = new WeakMap<object, Map<string, unknown>>()
const tagged = <T, I, O>(metric: Metric.Metric<T, I, O>, tags: Record<string, string>): Metric.Metric<T, I, O> => {
  let byTags = taggedCache.get(metric)
  if (!byTags) {
    byTags = new Map()
    taggedCache.set(metric, byTags)
  }
  const key = Object.entries(tags)
    .map(([k, v]) => `${k}\u0000${v}`)
    .join("\u0001")
  const found = byTags.get(key) as Metric.Metric<T, I, O> | undefined
  if (found) return found
  const made = Metric.taggedWithLabels(
    metric,
    Object.entries(tags).map(([k, v]) => MetricLabel.make(k, v))
  )
  byTags.set(key, made)
  return made
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

const errorStatus = (e: StripeError | SessionExpired): number | undefined => {
  switch (e._tag) {
    case "StripeRateLimited":
      return 429
    case "StripeUnavailable":
      return e.status
    case "StripeAuthenticationFailed":
    case "StripeInvalidRequest":
      return e.status
    case "SessionExpired":
      return 401
    case "StripeCircuitOpen":
      return undefined
  }
}

const errorOutcome = (e: StripeError | SessionExpired): string => {
  switch (e._tag) {
    case "StripeRateLimited":
      return "rate_limited"
    case "StripeUnavailable":
      return "unavailable"
    case "StripeAuthenticationFailed":
      return "auth_failed"
    case "StripeInvalidRequest":
      return "invalid_request"
    case "StripeCircuitOpen":
      return "circuit_open"
    case "SessionExpired":
      return "session_expired"
  }
}

const requestIdOf = (e: StripeError | SessionExpired): string | undefined =>
  "requestId" in e && typeof e.requestId === "string" ? e.requestId : undefined

const isBreakerFailure = (e: StripeError | SessionExpired): boolean =>
  e._tag === "StripeUnavailable" || e._tag === "StripeRateLimited"

const toCustomer = (c: Stripe.Customer | Stripe.DeletedCustomer): StripeCustomer => {
  if ("deleted" in c && c.deleted === true) {
    return { id: c.id, email: null, name: null, metadata: {}, created: 0, deleted: true }
  }
  const cu = c as Stripe.Customer
  return {
    id: cu.id,
    email: cu.email ?? null,
    name: cu.name ?? null,
    metadata: { ...(cu.metadata ?? {}) },
    created: cu.created,
    deleted: false
  }
}

const toMeter = (m: Stripe.Billing.Meter): StripeMeter => ({
  id: m.id,
  eventName: m.event_name,
  displayName: m.display_name,
  status: m.status,
  customerPayloadKey: m.customer_mapping?.event_payload_key ?? "stripe_customer_id",
  valuePayloadKey: m.value_settings?.event_payload_key ?? "value",
  formula: m.default_aggregation.formula
})

const exitFailure = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

const decimalOf = (v: unknown): string => normalize(typeof v === "string" ? v : String(v))

// ---------------------------------------------------------------------------------------------

/** Builds the service from explicit settings. Per-tenant resources live as long as the scope. */
export const makeStripeClient = (settings: StripeClientSettings): Effect.Effect<StripeClientService, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const timeoutMs = Math.max(1, Math.round(Duration.toMillis(Duration.decode(settings.timeout))))
    const refreshMarginMs = Duration.toMillis(Duration.decode(settings.sessionRefreshMargin))
    const retryPolicies = StripeRetry.policy(settings.retry)
    const httpClient = makeStripeHttpClient({ maxSockets: Math.max(16, settings.maxConcurrency * 4) })
    const apiHost = hostOf(settings.apiBase)
    const streamHost = hostOf(settings.meterEventsApiBase)

    // SDK instances, one pair per key. The map key is a hash: the key itself is only inside the SDK.
    const sdks = new Map<string, SdkPair>()
    const sdkFor = (key: Redacted.Redacted<string>): SdkPair => {
      const h = keyHash(key)
      const found = sdks.get(h)
      if (found) return found
      const config = (h: ReturnType<typeof hostOf>): Stripe.StripeConfig => ({
        host: h.host,
        port: h.port,
        protocol: h.protocol,
        maxNetworkRetries: 0,
        timeout: timeoutMs,
        httpClient,
        telemetry: false,
        appInfo: { name: "flexprice-stripe-sync" }
      })
      const pair: SdkPair = {
        api: new Stripe(Redacted.value(key), config(apiHost)),
        meterEvents: new Stripe(Redacted.value(key), config(streamHost))
      }
      sdks.set(h, pair)
      return pair
    }

    // Per-tenant state, created on first use. Concurrent first calls share one creation.
    const tenants = new Map<string, TenantState>()
    const pending = new Map<string, Deferred.Deferred<TenantState>>()
    const createTenant = (ref: StripeAccountRef, id: string): Effect.Effect<TenantState> =>
      Effect.gen(function* () {
        const perSecond = ref.livemode ? settings.rateLimitLivePerSecond : settings.rateLimitTestPerSecond
        const limiter = yield* RateLimiter.make({ limit: perSecond, interval: "1 second", algorithm: "token-bucket" })
        const streamLimiter = yield* RateLimiter.make({
          limit: settings.meterStreamRateLimitPerSecond,
          interval: "1 second",
          algorithm: "token-bucket"
        })
        const gauge = tagged(StripeMetrics.circuitState, { tenant: ref.tenantKey })
        yield* Metric.set(gauge, 0)
        const breaker = yield* CircuitBreaker.make(settings.breaker, (from, to) =>
          Effect.all(
            [
              Metric.set(gauge, CircuitBreaker.circuitStateValue(to)),
              Metric.increment(tagged(StripeMetrics.circuitTransitionsTotal, { to })),
              (to === "open" ? Effect.logWarning : Effect.logInfo)("stripe circuit breaker transition").pipe(
                Effect.annotateLogs({ tenant: ref.tenantKey, from, to })
              )
            ],
            { discard: true }
          )
        )
        const state: TenantState = {
          limiter,
          limiterName: ref.livemode ? "api_live" : "api_test",
          streamLimiter,
          // FIFO hand-off: thousands of queued calls must not each wake on every release.
          semaphore: FifoSemaphore.unsafeMake(settings.maxConcurrency),
          breaker,
          session: yield* SynchronizedRef.make(Option.none<Session>())
        }
        tenants.set(id, state)
        return state
      }).pipe(Scope.extend(scope))

    const tenantFor = (ref: StripeAccountRef): Effect.Effect<TenantState> =>
      Effect.suspend(() => {
        const id = `${ref.tenantKey}|${ref.livemode ? "live" : "test"}`
        const ready = tenants.get(id)
        if (ready) return Effect.succeed(ready)
        const inFlight = pending.get(id)
        if (inFlight) return Deferred.await(inFlight)
        const deferred = Deferred.unsafeMake<TenantState>(FiberId.none)
        pending.set(id, deferred)
        return createTenant(ref, id).pipe(
          Effect.tap((state) => Deferred.succeed(deferred, state)),
          Effect.ensuring(Effect.sync(() => pending.delete(id))),
          Effect.uninterruptible
        )
      })

    // Keyed locks for v1: one in-flight call per (tenant, event name, customer).
    const locks = new Map<string, { readonly semaphore: FifoSemaphore.FifoSemaphore; users: number }>()
    const withKeyLock = <A, E, R>(key: string, self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          let entry = locks.get(key)
          if (!entry) {
            entry = { semaphore: FifoSemaphore.unsafeMake(1), users: 0 }
            locks.set(key, entry)
          }
          entry.users++
          return entry
        }),
        (entry) => entry.semaphore.withPermit(self),
        (entry) =>
          Effect.sync(() => {
            entry.users--
            if (entry.users === 0) locks.delete(key)
          })
      )

    /**
     * One logical Stripe call: span, metrics, breaker, retries, semaphore, limiter, timeout,
     * error mapping. `recover` turns some failures into results (a duplicate meter event).
     */
    const execute = <A, B = A>(
      ref: StripeAccountRef,
      op: Operation,
      run: (sdk: SdkPair) => Promise<A>,
      options: {
        readonly attributes?: Record<string, string | number | boolean>
        readonly extraSecrets?: ReadonlyArray<Redacted.Redacted<string>>
        readonly recover?: (e: StripeError) => Option.Option<B>
        readonly outcome?: (b: A | B) => string
        readonly lock?: string
      } = {}
    ): Effect.Effect<A | B, StripeError | SessionExpired> =>
      Effect.gen(function* () {
        const tenant = yield* tenantFor(ref)
        const sdk = sdkFor(ref.apiKey)
        const secrets = [Redacted.value(ref.apiKey), ...(options.extraSecrets ?? []).map(Redacted.value)]
        const limiter = op.host === "api" ? tenant.limiter : tenant.streamLimiter
        const limiterName = op.host === "api" ? tenant.limiterName : "meter_events"
        const started = yield* Clock.currentTimeMillis
        let attempts = 0
        let lastStatus: number | undefined
        let lastRequestId: string | undefined

        const attempt: Effect.Effect<A, StripeError | SessionExpired> = tenant.semaphore.withPermit(
          Effect.gen(function* () {
            attempts++
            const n = attempts
            const waitStart = yield* Clock.currentTimeMillis
            const waitEnd = yield* limiter(Clock.currentTimeMillis)
            yield* Metric.update(
              tagged(StripeMetrics.rateLimiterWait, { limiter: limiterName }),
              (waitEnd - waitStart) / 1000
            )
            const trace = yield* traceHeaders
            const result = yield* Effect.tryPromise({ try: () => outgoingHeaders.run(trace, () => run(sdk)), catch: (u) => u }).pipe(
              Effect.timeoutFail({
                // The SDK's timeout is per socket inactivity; this bounds the whole attempt.
                duration: Duration.millis(timeoutMs + 5_000),
                onTimeout: () => new StripeUnavailable({ reason: "timeout", detail: "attempt exceeded the client timeout" })
              }),
              Effect.catchAll((u) => {
                if (u instanceof StripeUnavailable) return Effect.fail(u)
                const nowMs = Date.now()
                const mapped = fromSdkError(u, { secrets, nowMs })
                return mapped === undefined
                  ? Effect.die(new Error(`unexpected failure in Stripe SDK call ${op.name}`))
                  : Effect.fail(mapped)
              }),
              Effect.onExit((exit) => {
                const failure = exitFailure(exit)
                const status = Exit.isSuccess(exit)
                  ? (lastResponseOf(exit.value).statusCode ?? 200)
                  : failure !== undefined
                    ? errorStatus(failure)
                    : undefined
                lastStatus = status
                lastRequestId = Exit.isSuccess(exit)
                  ? lastResponseOf(exit.value).requestId
                  : failure !== undefined
                    ? requestIdOf(failure)
                    : undefined
                return Effect.all([
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
                ], { discard: true })
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
          StripeRetry.applyPolicies(retryPolicies, (reason, e) =>
            Effect.all([
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
            ], { discard: true })
          )
        )

        const recovered: Effect.Effect<A | B, StripeError | SessionExpired> = options.recover
          ? Effect.catchIf(
              retried,
              (e): e is StripeError => e._tag !== "SessionExpired" && Option.isSome(options.recover!(e as StripeError)),
              (e) => Effect.succeed(Option.getOrThrow(options.recover!(e)))
            )
          : retried

        const guarded = tenant.breaker.protect(recovered, isBreakerFailure)
        const locked = options.lock !== undefined ? withKeyLock(options.lock, guarded) : guarded

        return yield* locked.pipe(
          Effect.onExit((exit) =>
            Effect.gen(function* () {
              const ended = yield* Clock.currentTimeMillis
              const failure = exitFailure(exit)
              const outcome = Exit.isSuccess(exit)
                ? (options.outcome?.(exit.value) ?? "success")
                : failure !== undefined
                  ? errorOutcome(failure)
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
              yield* Metric.update(
                tagged(StripeMetrics.callDuration, { endpoint: op.endpoint, outcome }),
                (ended - started) / 1000
              )
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
      }).pipe(
        Effect.withSpan(`stripe.${op.name}`, {
          kind: "client",
          // Stack capture per span cost ~10% of a v1 call in profiles; the span name says where.
          captureStackTrace: false,
          attributes: {
            "stripe.endpoint": op.endpoint,
            "stripe.tenant": ref.tenantKey,
            "stripe.livemode": ref.livemode,
            ...options.attributes
          }
        })
      )

    /** Calls that can never see a session error: anything else is a bug in the mapping. */
    const plain = <A>(self: Effect.Effect<A, StripeError | SessionExpired>): Effect.Effect<A, StripeError> =>
      Effect.catchTag(self, "SessionExpired", (e) =>
        Effect.fail(new StripeUnavailable({ reason: "session_expired", status: 401, requestId: e.requestId }))
      )

    // ---- operations

    const retrieveAccount = (ref: StripeAccountRef) =>
      plain(execute(ref, ops.retrieveAccount, (sdk) => sdk.api.accounts.retrieveCurrent())).pipe(
        Effect.map((a): StripeAccountInfo => {
          const raw = a as unknown as { livemode?: unknown }
          const key = Redacted.value(ref.apiKey)
          return {
            id: a.id,
            livemode: typeof raw.livemode === "boolean" ? raw.livemode : /^(?:sk|rk)_live_/.test(key),
            displayName: a.settings?.dashboard?.display_name ?? a.business_profile?.name ?? null
          }
        })
      )

    const retrieveCustomer = (ref: StripeAccountRef, customerId: string) =>
      plain(
        execute(ref, ops.retrieveCustomer, (sdk) => sdk.api.customers.retrieve(customerId), {
          attributes: { "stripe.customer": customerId }
        })
      ).pipe(Effect.map(toCustomer))

    const customerPage = (ref: StripeAccountRef, startingAfter: string | undefined) =>
      plain(
        execute(ref, ops.listCustomers, (sdk) =>
          sdk.api.customers.list(
            startingAfter === undefined ? { limit: PAGE_LIMIT } : { limit: PAGE_LIMIT, starting_after: startingAfter }
          ),
          { attributes: { "stripe.starting_after": startingAfter ?? "" } }
        )
      ).pipe(
        Effect.map((list): StripeCustomerPage => {
          const customers = list.data.map(toCustomer)
          return {
            customers,
            lastId: customers.length > 0 ? customers[customers.length - 1]!.id : startingAfter,
            hasMore: list.has_more && customers.length > 0
          }
        })
      )

    const streamCustomerPages = (ref: StripeAccountRef, startingAfter?: string) =>
      Stream.paginateEffect(startingAfter, (cursor) =>
        Effect.map(customerPage(ref, cursor), (page) => [page, page.hasMore ? Option.some(page.lastId) : Option.none()] as const)
      )

    const streamCustomers = (ref: StripeAccountRef) =>
      streamCustomerPages(ref).pipe(Stream.mapConcat((page) => page.customers))

    const retrieveMeter = (ref: StripeAccountRef, meterId: string) =>
      plain(
        execute(ref, ops.retrieveMeter, (sdk) => sdk.api.billing.meters.retrieve(meterId), {
          attributes: { "stripe.meter": meterId }
        })
      ).pipe(Effect.map(toMeter))

    const listMeters = (ref: StripeAccountRef) =>
      Effect.gen(function* () {
        const out: Array<StripeMeter> = []
        let cursor: string | undefined
        for (;;) {
          const page = yield* plain(
            execute(ref, ops.listMeters, (sdk) =>
              sdk.api.billing.meters.list(
                cursor === undefined ? { limit: PAGE_LIMIT } : { limit: PAGE_LIMIT, starting_after: cursor }
              )
            )
          )
          out.push(...page.data.map(toMeter))
          if (!page.has_more || page.data.length === 0) return out as ReadonlyArray<StripeMeter>
          cursor = page.data[page.data.length - 1]!.id
        }
      })

    // ---- v2 meter event stream

    /**
     * The tenant's session, created or refreshed when missing, for another key, within the
     * refresh margin of its expiry, or equal to `stale` (the token Stripe just said expired).
     */
    const sessionFor = (
      ref: StripeAccountRef,
      tenant: TenantState,
      stale?: Redacted.Redacted<string>
    ): Effect.Effect<Session, StripeError> =>
      // Lock-free read first: concurrent chunk sends must not queue on the refresh lock.
      Effect.flatMap(Effect.all([SynchronizedRef.get(tenant.session), Clock.currentTimeMillis]), ([current, now]) =>
        stale === undefined &&
        Option.isSome(current) &&
        current.value.keyHash === keyHash(ref.apiKey) &&
        now < current.value.expiresAtMs - refreshMarginMs
          ? Effect.succeed(current.value)
          : refreshSession(ref, tenant, stale)
      )

    const refreshSession = (
      ref: StripeAccountRef,
      tenant: TenantState,
      stale?: Redacted.Redacted<string>
    ): Effect.Effect<Session, StripeError> =>
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
              : expires - Date.now()
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
      Effect.gen(function* () {
        const tenant = yield* tenantFor(ref)
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
            (sdk) =>
              sdk.meterEvents.v2.billing.meterEventStream.create(params, { apiKey: Redacted.value(session.token) }),
            { attributes: { "stripe.events": chunk.length }, extraSecrets: [session.token] }
          )
        const first = yield* sessionFor(ref, tenant)
        yield* send(first).pipe(
          Effect.catchTag("SessionExpired", () =>
            Effect.gen(function* () {
              yield* Metric.increment(
                tagged(StripeMetrics.retriesTotal, { endpoint: ops.streamEvents.endpoint, reason: "session_expired" })
              )
              const fresh = yield* sessionFor(ref, tenant, first.token)
              return yield* plain(send(fresh))
            })
          )
        )
        yield* Metric.incrementBy(tagged(StripeMetrics.meterEventsTotal, { transport: "stream", outcome: "delivered" }), chunk.length)
      })

    const sendMeterEventsStream = (
      ref: StripeAccountRef,
      events: ReadonlyArray<MeterEvent>,
      options?: { readonly concurrency?: number }
    ) =>
      Effect.gen(function* () {
        const chunks = Arr.chunksOf(events, STREAM_CHUNK)
        yield* Effect.forEach(chunks, (chunk) => sendChunk(ref, chunk), {
          concurrency: Math.max(1, options?.concurrency ?? 1),
          discard: true
        })
        return { requests: chunks.length, events: events.length }
      }).pipe(
        Effect.withSpan("stripe.send_meter_events", {
          captureStackTrace: false,
          attributes: { "stripe.tenant": ref.tenantKey, "stripe.events": events.length, "stripe.transport": "stream" }
        })
      )

    // ---- v1 meter events

    const sendMeterEventV1 = (
      ref: StripeAccountRef,
      event: MeterEvent,
      options?: { readonly customerPayloadKey?: string }
    ) => {
      const customerKey = options?.customerPayloadKey ?? "stripe_customer_id"
      const customer = event.payload[customerKey] ?? ""
      return plain(
        execute<Stripe.Billing.MeterEvent, MeterEventOutcome>(
          ref,
          ops.meterEventV1,
          (sdk) =>
            sdk.api.billing.meterEvents.create(
              {
                event_name: event.eventName,
                identifier: event.identifier,
                payload: { ...event.payload },
                timestamp: Math.floor(event.timestamp.getTime() / 1000)
              },
              { idempotencyKey: event.identifier }
            ),
          {
            attributes: { "stripe.event_name": event.eventName, "stripe.identifier": event.identifier },
            recover: (e) => (isDuplicateMeterEvent(e) ? Option.some("duplicate" as const) : Option.none()),
            outcome: (r) => (r === "duplicate" ? "duplicate" : "success"),
            lock: `${ref.tenantKey}\u0000${event.eventName}\u0000${customer}`
          }
        )
      ).pipe(
        Effect.map((r): MeterEventOutcome => (r === "duplicate" ? "duplicate" : "delivered")),
        Effect.tap((outcome) =>
          Metric.increment(tagged(StripeMetrics.meterEventsTotal, { transport: "v1", outcome }))
        )
      )
    }

    // ---- summaries

    const listMeterEventSummaries = (ref: StripeAccountRef, query: MeterEventSummaryQuery) =>
      Effect.gen(function* () {
        const out: Array<MeterEventSummary> = []
        let cursor: string | undefined
        const base = {
          customer: query.customer,
          start_time: Math.floor(query.startTime.getTime() / 1000),
          end_time: Math.floor(query.endTime.getTime() / 1000),
          value_grouping_window: "hour" as const,
          limit: PAGE_LIMIT
        }
        for (;;) {
          const page = yield* plain(
            execute(
              ref,
              ops.listSummaries,
              (sdk) =>
                sdk.api.billing.meters.listEventSummaries(
                  query.meterId,
                  cursor === undefined ? base : { ...base, starting_after: cursor }
                ),
              { attributes: { "stripe.meter": query.meterId, "stripe.customer": query.customer } }
            )
          )
          for (const s of page.data) {
            out.push({
              startTime: new Date(s.start_time * 1000),
              endTime: new Date(s.end_time * 1000),
              aggregatedValue: decimalOf(s.aggregated_value)
            })
          }
          if (!page.has_more || page.data.length === 0) break
          cursor = page.data[page.data.length - 1]!.id
        }
        return out.sort((a, b) => a.startTime.getTime() - b.startTime.getTime()) as ReadonlyArray<MeterEventSummary>
      })

    const circuitState = (ref: StripeAccountRef) => Effect.flatMap(tenantFor(ref), (t) => t.breaker.state)

    return {
      retrieveAccount,
      retrieveCustomer,
      streamCustomerPages,
      streamCustomers,
      retrieveMeter,
      listMeters,
      sendMeterEventsStream,
      sendMeterEventV1,
      listMeterEventSummaries,
      circuitState
    } satisfies StripeClientService
  })

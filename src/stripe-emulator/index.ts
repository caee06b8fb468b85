/**
 * A stateful, in-memory Stripe for tests, the demo and the benchmarks (SPEC §12). No machine here
 * reaches Stripe, so this is how the project proves its Stripe behaviour: the real `stripe` SDK
 * talks to it over HTTP, in Stripe's wire format.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Deferred, Effect, Redacted, type Scope } from "effect"
import { createServer } from "node:http"
import { type StripeEmulatorError } from "./errors.js"
import { Faults, type FaultConfig } from "./faults.js"
import {
  type EmulatorContext,
  type HoldRule,
  makeApp,
  releaseHeld,
  rollKeys
} from "./server.js"
import {
  type Customer,
  type CustomerParams,
  type DeletedCustomer,
  EmulatorState,
  type Meter,
  type MeterEventRecord,
  type MeterEventSession,
  type MeterParams,
  type ReceivedMeterEvent,
  type StreamEventError,
  type Totals
} from "./state.js"
import { makeWebhookManager, type StripeEvent, type V2Event, type WebhookDeliveries, type WebhookTarget } from "./webhooks.js"
import { RateLimiter, type RateLimitConfig, STRIPE_RATE_LIMITS } from "./limits.js"

export { decodeForm, encodeForm } from "./form.js"
export type { FormObject, FormValue } from "./form.js"
export { StripeEmulatorError, maskKey } from "./errors.js"
export type { FaultConfig, FaultKind } from "./faults.js"
export { faultConfigFromJson } from "./faults.js"
export type {
  Customer,
  CustomerParams,
  DeletedCustomer,
  Meter,
  MeterEvent,
  MeterEventRecord,
  MeterEventSession,
  MeterFormula,
  MeterParams,
  ReceivedMeterEvent,
  StreamEventError,
  Totals
} from "./state.js"
export { DEDUP_WINDOW_MS, MAX_FUTURE_SECONDS, MAX_PAST_SECONDS, MAX_STREAM_EVENTS, SESSION_TTL_MS } from "./state.js"
export type { DeliveryRecord, SigningOptions, StripeEvent, WebhookDeliveries, WebhookTarget } from "./webhooks.js"
export { computeSignature, EMULATOR_API_VERSION, signatureHeader } from "./webhooks.js"
export { endpointKey, recordExchanges } from "./server.js"
export type { Exchange } from "./server.js"
export type { RateLimitConfig } from "./limits.js"
export { STRIPE_RATE_LIMITS } from "./limits.js"
export { countSignificantDigits, isNumericString } from "./digits.js"
export type { V2Event } from "./webhooks.js"
export { LIVE_RETRY_DELAYS_MS, TEST_RETRY_DELAYS_MS } from "./webhooks.js"

export interface StripeEmulatorOptions {
  /** The secret key clients must present (`sk_test_…`; `sk_live_`/`rk_live_` makes it livemode). */
  readonly apiKey: string | Redacted.Redacted<string>
  /** 0 (default) picks a free port. */
  readonly port?: number
  /** Default 127.0.0.1. */
  readonly host?: string
  readonly webhook?: WebhookTarget
  /** Emulator clock in unix ms. Default: Effect's Clock (so TestClock works) plus `advanceClock`. */
  readonly now?: () => number
  /**
   * "async" (default, as Stripe): invalid stream events are accepted with 200 and listed in
   * `streamErrors()`. "sync": the whole stream request is refused with 400.
   */
  readonly streamValidation?: "async" | "sync"
  /**
   * Stripe's rate limits (limits.ts): default `STRIPE_RATE_LIMITS` (test mode 25 req/s shared;
   * live 1,000 v1 meter events/s, 10,000 stream requests/s, 100/s elsewhere). `"off"` lifts them
   * (benchmarks; the demo says so in its output).
   */
  readonly rateLimits?: RateLimitConfig | "off"
  /** Refuse a second concurrent v1 meter event call for the same customer + meter (default true, as Stripe). */
  readonly v1ConcurrencyLimit?: boolean
  /** Delay before an accepted event shows in event summaries (default 2,000 ms; 0 = at once). */
  readonly summaryDelayMs?: number
  /** Event destination for v2 thin events (`v1.billing.meter.error_report_triggered`). */
  readonly eventDestination?: WebhookTarget
  /** Webhook / event destination retry back-off (default: Stripe's schedule for the mode). */
  readonly webhookRetryDelaysMs?: ReadonlyArray<number>
}

/** The summary delay when none is given: "a few seconds", as Stripe aggregates asynchronously. */
export const DEFAULT_SUMMARY_DELAY_MS = 2_000

export interface HoldOptions {
  /** How many matching requests to hold (default 1). */
  readonly count?: number
  /** Apply the request before holding its answer (default true: Stripe accepted it). */
  readonly applyFirst?: boolean
}

export interface StripeEmulatorHandle {
  /** Base URL, e.g. http://127.0.0.1:43121 (serves the API and the meter events host alike). */
  readonly url: string
  readonly host: string
  readonly port: number
  readonly livemode: boolean
  readonly accountId: string

  /** Read-only views of the account. */
  readonly state: {
    readonly customers: () => ReadonlyArray<Customer>
    readonly meters: () => ReadonlyArray<Meter>
    readonly meterEvents: () => ReadonlyArray<MeterEventRecord>
    readonly totals: () => ReadonlyArray<Totals>
    readonly streamErrors: () => ReadonlyArray<StreamEventError>
    readonly duplicatesIgnored: () => number
    /** Every valid meter event received, duplicates included, in arrival order. */
    readonly received: () => ReadonlyArray<ReceivedMeterEvent>
    readonly events: () => ReadonlyArray<StripeEvent>
  }

  /** Same effects as the API calls, webhooks included. */
  readonly createCustomer: (params?: CustomerParams) => Effect.Effect<Customer, StripeEmulatorError>
  readonly updateCustomer: (id: string, params: CustomerParams) => Effect.Effect<Customer, StripeEmulatorError>
  readonly deleteCustomer: (id: string) => Effect.Effect<DeletedCustomer, StripeEmulatorError>
  readonly createMeter: (params: MeterParams) => Effect.Effect<Meter, StripeEmulatorError>
  readonly deactivateMeter: (id: string) => Effect.Effect<Meter, StripeEmulatorError>
  readonly createSession: () => Effect.Effect<MeterEventSession>

  /** Exact decimal sums and counts keyed `${customer}\u0000${eventName}`… use `total()` for one pair. */
  readonly totals: () => ReadonlyMap<string, { readonly sum: string; readonly count: number }>
  /** Exact decimal sum ("0" when none) and count for one (customer, event_name). */
  readonly total: (customer: string, eventName: string) => { readonly sum: string; readonly count: number }
  /** Requests received per endpoint (`"POST /v2/billing/meter_event_stream"`, `"GET /v1/customers/cus_:id"`). */
  readonly callCounts: () => Readonly<Record<string, number>>
  /** Requests received per answered status (0 = dropped connection). */
  readonly statusCounts: () => Readonly<Record<string, number>>
  readonly totalCalls: () => number
  /**
   * v1 meter event calls that arrived while another call for the same (meter, customer) was still
   * unanswered — the client must keep this at 0.
   */
  readonly v1ConcurrentSameCustomerMeter: () => number
  readonly resetCounters: () => void

  readonly setFaults: (faults: FaultConfig) => Effect.Effect<void>
  readonly resetFaults: () => void
  /** Expires every stream session issued so far (the next stream call answers 401). */
  readonly expireSessions: () => Effect.Effect<number>

  /** Hold the next matching request(s) without answering until `release()`. */
  readonly holdNext: (
    predicate?: (request: { readonly method: string; readonly path: string }) => boolean,
    options?: HoldOptions
  ) => void
  /** Completes when at least `n` requests are being held. */
  readonly awaitHeld: (n?: number) => Effect.Effect<void>
  readonly heldCount: () => number
  /** Answers every held request; returns how many. Pending hold rules are dropped too. */
  readonly release: () => Effect.Effect<number>

  readonly setWebhookTarget: (target: WebhookTarget | undefined) => void
  /** The v2 event destination (thin events) and its delivery controls. */
  readonly setEventDestination: (target: WebhookTarget | undefined) => void
  readonly eventDestination: WebhookDeliveries
  /** Full v2 events emitted so far (what `GET /v2/core/events/:id` answers). */
  readonly v2Event: (id: string) => V2Event | undefined
  /** Rolls the secret key: returns a new one; the old expires after `expireAfterMs` (default now). */
  readonly rollKey: (expireAfterMs?: number) => Effect.Effect<string>
  readonly setRateLimits: (limits: RateLimitConfig | "off") => void
  readonly setSummaryDelay: (ms: number) => void
  readonly setV1ConcurrencyLimit: (on: boolean) => void
  readonly deliveries: WebhookDeliveries
  /** Emits any event type (e.g. for tests of ignored types); delivered like the others. */
  readonly emitEvent: (type: string, object: unknown, previous?: Record<string, unknown>) => Effect.Effect<StripeEvent>

  /** Moves the emulator clock forward (token expiry, 24 h dedup, 35-day limit without waiting). */
  readonly advanceClock: (ms: number) => void
  readonly now: Effect.Effect<number>
}

const attemptSync = <A>(f: () => A): Effect.Effect<A, StripeEmulatorError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      if (e && typeof e === "object" && (e as { _tag?: unknown })._tag === "StripeEmulatorError") {
        return Effect.fail(e as StripeEmulatorError)
      }
      return Effect.die(e)
    }
  })

/**
 * Starts the emulator on `host:port` (default 127.0.0.1, a free port) for the life of the scope.
 * A port that cannot be bound is a defect: tests and the demo cannot go on without it.
 */
export const makeStripeEmulator = (
  options: StripeEmulatorOptions
): Effect.Effect<StripeEmulatorHandle, never, Scope.Scope> =>
  Effect.gen(function* () {
    const apiKey = Redacted.isRedacted(options.apiKey) ? options.apiKey : Redacted.make(options.apiKey)
    const rawKey = Redacted.value(apiKey)
    const livemode = rawKey.startsWith("sk_live_") || rawKey.startsWith("rk_live_")
    const clock = yield* Effect.clock
    let offsetMs = 0
    const base = options.now
    const now: Effect.Effect<number> = base
      ? Effect.sync(() => base() + offsetMs)
      : Effect.map(clock.currentTimeMillis, (ms) => ms + offsetMs)

    const state = new EmulatorState(livemode)
    const faults = new Faults()
    const webhooks = yield* makeWebhookManager({
      livemode,
      now,
      target: options.webhook,
      retryDelaysMs: options.webhookRetryDelaysMs
    })
    const eventDestination = yield* makeWebhookManager({
      livemode,
      now,
      target: options.eventDestination,
      retryDelaysMs: options.webhookRetryDelaysMs
    })
    const limits = (l: RateLimitConfig | "off" | undefined) => (l === "off" ? undefined : (l ?? STRIPE_RATE_LIMITS))
    const ctx: EmulatorContext = {
      keys: new Map([[rawKey, "active" as const]]),
      rateLimiter: new RateLimiter(livemode, limits(options.rateLimits)),
      v1ConcurrencyLimit: options.v1ConcurrencyLimit ?? true,
      summaryDelayMs: options.summaryDelayMs ?? DEFAULT_SUMMARY_DELAY_MS,
      eventDestination,
      livemode,
      state,
      faults,
      webhooks,
      now,
      advanceClock: (ms) => {
        offsetMs += ms
      },
      counters: { total: 0, v1Overlaps: 0, byEndpoint: new Map(), byStatus: new Map() },
      holdRules: [],
      held: [],
      heldWaiters: [],
      idempotency: new Map(),
      v1InFlight: new Map(),
      streamValidation: options.streamValidation ?? "async"
    }

    const host = options.host ?? "127.0.0.1"
    const nodeServer = createServer()
    // Keep-alive sockets from SDK agents would otherwise hold the close for their idle timeout.
    nodeServer.keepAliveTimeout = 5_000
    const server = yield* NodeHttpServer.make(() => nodeServer, { port: options.port ?? 0, host }).pipe(
      Effect.orDieWith((e) => new Error(`stripe emulator could not listen on ${host}:${options.port ?? 0}: ${String(e.cause)}`))
    )
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* releaseHeld(ctx)
        nodeServer.closeAllConnections()
      })
    )
    yield* server.serve(makeApp(ctx))
    const address = server.address
    const port = address._tag === "TcpAddress" ? address.port : 0
    const url = `http://${host}:${port}`

    const totalsMap = () => {
      const m = new Map<string, { sum: string; count: number }>()
      for (const t of state.totalsList()) m.set(`${t.customer}\u0000${t.eventName}`, { sum: t.sum, count: t.count })
      return m
    }

    const handle: StripeEmulatorHandle = {
      url,
      host,
      port,
      livemode,
      accountId: state.accountId,
      state: {
        customers: () => state.allCustomers(),
        meters: () => state.allMeters(),
        meterEvents: () => state.meterEvents(),
        totals: () => state.totalsList(),
        streamErrors: () => state.streamErrors(),
        duplicatesIgnored: () => state.duplicatesIgnored,
        received: () => state.received(),
        events: () => webhooks.events()
      },
      createCustomer: (params = {}) =>
        Effect.gen(function* () {
          const t = yield* now
          const c = yield* attemptSync(() => state.createCustomer(params, t))
          yield* webhooks.emit("customer.created", c)
          return c
        }),
      updateCustomer: (id, params) =>
        Effect.gen(function* () {
          const { customer, previous } = yield* attemptSync(() => state.updateCustomer(id, params))
          yield* webhooks.emit("customer.updated", customer, { previous })
          return customer
        }),
      deleteCustomer: (id) =>
        Effect.gen(function* () {
          const { deleted, customer } = yield* attemptSync(() => state.deleteCustomer(id))
          yield* webhooks.emit("customer.deleted", customer)
          return deleted
        }),
      createMeter: (params) => Effect.flatMap(now, (t) => attemptSync(() => state.createMeter(params, t))),
      deactivateMeter: (id) => Effect.flatMap(now, (t) => attemptSync(() => state.setMeterStatus(id, "inactive", t))),
      createSession: () => Effect.map(now, (t) => state.createSession(t)),
      totals: totalsMap,
      total: (customer, eventName) => totalsMap().get(`${customer}\u0000${eventName}`) ?? { sum: "0", count: 0 },
      callCounts: () => Object.fromEntries(ctx.counters.byEndpoint),
      statusCounts: () => Object.fromEntries(ctx.counters.byStatus),
      totalCalls: () => ctx.counters.total,
      v1ConcurrentSameCustomerMeter: () => ctx.counters.v1Overlaps,
      resetCounters: () => {
        ctx.counters.total = 0
        ctx.counters.v1Overlaps = 0
        ctx.counters.byEndpoint.clear()
        ctx.counters.byStatus.clear()
      },
      setFaults: (f) =>
        Effect.gen(function* () {
          const t = yield* now
          faults.set(f, t)
          if (f.expireSessions) state.expireAllSessions(t)
        }),
      resetFaults: () => faults.reset(),
      expireSessions: () => Effect.map(now, (t) => state.expireAllSessions(t)),
      holdNext: (predicate = () => true, opts = {}) => {
        const rule: HoldRule = { match: predicate, remaining: opts.count ?? 1, applyFirst: opts.applyFirst ?? true }
        ctx.holdRules.push(rule)
      },
      awaitHeld: (n = 1) =>
        Effect.gen(function* () {
          if (ctx.held.length >= n) return
          const deferred = yield* Deferred.make<void>()
          ctx.heldWaiters.push({ n, deferred })
          yield* Deferred.await(deferred)
        }),
      heldCount: () => ctx.held.length,
      release: () =>
        Effect.suspend(() => {
          ctx.holdRules.length = 0
          return releaseHeld(ctx)
        }),
      setWebhookTarget: (t) => webhooks.setTarget(t),
      setEventDestination: (t) => eventDestination.setTarget(t),
      eventDestination,
      v2Event: (id) => eventDestination.v2Event(id),
      rollKey: (expireAfterMs = 0) => rollKeys(ctx, expireAfterMs),
      setRateLimits: (l) => ctx.rateLimiter.set(limits(l)),
      setSummaryDelay: (ms) => {
        ctx.summaryDelayMs = ms
      },
      setV1ConcurrencyLimit: (on) => {
        ctx.v1ConcurrencyLimit = on
      },
      deliveries: webhooks,
      emitEvent: (type, object, previous) => webhooks.emit(type, object, previous ? { previous } : {}),
      advanceClock: (ms) => ctx.advanceClock(ms),
      now
    }
    return handle
  })

/**
 * `flexprice stripe-emulator --port 12111`: serves until interrupted. Logs the URL, never the key.
 */
export const runStandalone = (options: {
  readonly port: number
  readonly apiKey: string | Redacted.Redacted<string>
  readonly host?: string
  readonly webhook?: WebhookTarget
}): Effect.Effect<never> =>
  Effect.scoped(
    Effect.gen(function* () {
      const handle = yield* makeStripeEmulator(options)
      yield* Effect.logInfo(`Stripe emulator listening on ${handle.url}`).pipe(
        Effect.annotateLogs({ livemode: handle.livemode, account: handle.accountId })
      )
      return yield* Effect.never
    })
  )


/**
 * Webhook events and their delivery, signed the way Stripe signs:
 * `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` (one v1 per secret
 * while a secret is being rolled). Delivery controls for tests: duplicate, hold and release in any
 * order, delay, stale timestamps and tampered signatures.
 */
import { Duration, Effect, FiberSet, Redacted } from "effect"
import { createHmac } from "node:crypto"
import { stripeId } from "./state.js"

/** The API version stripe-node 23.1.0 pins; events carry it like Stripe's do. */
export const EMULATOR_API_VERSION = "2026-10-28.endive"

export interface WebhookTarget {
  readonly url: string
  readonly secret: string | Redacted.Redacted<string>
}

export interface StripeEvent {
  readonly id: string
  readonly object: "event"
  readonly api_version: string
  readonly created: number
  readonly data: { readonly object: unknown; readonly previous_attributes?: Record<string, unknown> }
  readonly livemode: boolean
  readonly pending_webhooks: number
  readonly request: { readonly id: string | null; readonly idempotency_key: string | null }
  readonly type: string
}

export interface DeliveryRecord {
  readonly eventId: string
  readonly type: string
  /** 1 for the first send of an event, 2 for its duplicate or redelivery, ... */
  readonly attempt: number
  /** HTTP status the target answered with; null when the request failed (refused, timed out). */
  readonly status: number | null
  readonly error?: string
  readonly atMs: number
  readonly durationMs: number
}

export interface SigningOptions {
  /** Additional secrets (e.g. the previous one during rotation): one more v1 signature each. */
  readonly extraSecrets?: ReadonlyArray<string | Redacted.Redacted<string>>
  /** Shifts `t` (e.g. -600 for a stale signature that verification should reject). */
  readonly timestampOffsetSeconds?: number
  /** Signs something else than the body, so verification must fail. */
  readonly tamper?: boolean
}

/** Stripe's v1 scheme: hex HMAC-SHA256 of `${t}.${payload}` keyed with the whole secret string. */
export const computeSignature = (payload: string, secret: string, timestampSec: number): string =>
  createHmac("sha256", secret).update(`${timestampSec}.${payload}`, "utf8").digest("hex")

export const signatureHeader = (
  payload: string,
  secrets: ReadonlyArray<string | Redacted.Redacted<string>>,
  timestampSec: number
): string =>
  [
    `t=${timestampSec}`,
    ...secrets.map((s) => `v1=${computeSignature(payload, Redacted.isRedacted(s) ? Redacted.value(s) : s, timestampSec)}`)
  ].join(",")

const DELIVERY_TIMEOUT_MS = 10_000

export interface WebhookDeliveries {
  /** The next `times` events are each sent `1 + copies` times. */
  readonly duplicateNext: (copies?: number, times?: number) => void
  /** Start keeping events instead of sending them (until `release`). */
  readonly hold: () => void
  /** Events currently held, oldest first. */
  readonly held: () => ReadonlyArray<StripeEvent>
  /**
   * Sends the held events one after another — in `order` (event ids; the rest follow oldest
   * first), "reverse", or oldest first — and stops holding. Returns what each send got back.
   */
  readonly release: (order?: ReadonlyArray<string> | "reverse") => Effect.Effect<ReadonlyArray<DeliveryRecord>>
  /** Delay before every send (0 = none). */
  readonly setDelay: (ms: number) => void
  readonly setSigning: (options: SigningOptions) => void
  /** Sends one stored event again now (like "Resend" in Stripe's dashboard). */
  readonly redeliver: (eventId: string) => Effect.Effect<DeliveryRecord, Error>
  /** Waits until every send in flight finished. */
  readonly flush: Effect.Effect<void>
  readonly log: () => ReadonlyArray<DeliveryRecord>
  readonly events: () => ReadonlyArray<StripeEvent>
  /** Replaces the retry schedule (e.g. a compressed one in tests; [] = no retries). */
  readonly setRetryDelays: (delays: ReadonlyArray<number>) => void
}

export interface WebhookManager extends WebhookDeliveries {
  readonly setTarget: (target: WebhookTarget | undefined) => void
  readonly target: () => WebhookTarget | undefined
  readonly emit: (
    type: string,
    object: unknown,
    options?: {
      readonly previous?: Record<string, unknown>
      readonly requestId?: string | null
      readonly idempotencyKey?: string | null
    }
  ) => Effect.Effect<StripeEvent>
  readonly event: (id: string) => StripeEvent | undefined
  readonly eventOrder: () => ReadonlyArray<string>
  /** Stores a v2 event and delivers its thin notification to the target. */
  readonly emitV2: (
    type: string,
    relatedObject: V2Event["related_object"],
    data: Record<string, unknown>
  ) => Effect.Effect<V2Event>
  readonly v2Event: (id: string) => V2Event | undefined
}

/**
 * Stripe retries a delivery that did not get a 2xx: "In live mode, Stripe attempts to deliver a
 * given event to your webhook endpoint for up to 3 days with an exponential back off. In
 * sandboxes, Stripe retries three times over a few hours." It also warns that "endpoints might
 * occasionally receive the same event more than once" and that Stripe "doesn't guarantee delivery
 * of events in the order in which they're generated" (https://docs.stripe.com/webhooks#retries,
 * #handle-duplicate-events, #event-ordering). The defaults below are that schedule; tests pass a
 * compressed one (`retryDelaysMs`).
 */
export const LIVE_RETRY_DELAYS_MS: ReadonlyArray<number> = [
  60_000, 5 * 60_000, 30 * 60_000, 2 * 3_600_000, 5 * 3_600_000, 10 * 3_600_000, 24 * 3_600_000, 48 * 3_600_000
]
export const TEST_RETRY_DELAYS_MS: ReadonlyArray<number> = [5 * 60_000, 30 * 60_000, 2 * 3_600_000]

/**
 * A v2 event (event destinations): the full event, fetched by id at `GET /v2/core/events/:id`;
 * the destination receives only its thin notification (no `data`)
 * (https://docs.stripe.com/api/v2/core/events/object, https://docs.stripe.com/event-destinations#thin-payload).
 */
export interface V2Event {
  readonly id: string
  readonly object: "v2.core.event"
  readonly type: string
  readonly created: string
  readonly livemode: boolean
  readonly context: null
  readonly reason: null
  readonly related_object: { readonly id: string; readonly type: string; readonly url: string } | null
  readonly data: Record<string, unknown>
}

export const makeWebhookManager = (options: {
  readonly livemode: boolean
  readonly now: Effect.Effect<number>
  readonly target?: WebhookTarget | undefined
  /** Delays before each retry of a delivery that got no 2xx. Default: Stripe's for the mode. */
  readonly retryDelaysMs?: ReadonlyArray<number> | undefined
}): Effect.Effect<WebhookManager, never, import("effect").Scope.Scope> =>
  Effect.gen(function* () {
    const fibers = yield* FiberSet.make<void, never>()
    const runFork = yield* FiberSet.runtime(fibers)<never>()
    // Retries wait hours on Stripe's schedule; `flush` waits for sends in flight, not for them.
    const retryFibers = yield* FiberSet.make<void, never>()
    const runRetry = yield* FiberSet.runtime(retryFibers)<never>()
    let target = options.target
    let holding = false
    let heldEvents: Array<StripeEvent> = []
    let duplicate = { copies: 0, times: 0 }
    let delayMs = 0
    let signing: SigningOptions = {}
    const attempts = new Map<string, number>()
    const records: Array<DeliveryRecord> = []
    const events = new Map<string, StripeEvent>()
    const order: Array<string> = []
    let retryDelays = options.retryDelaysMs ?? (options.livemode ? LIVE_RETRY_DELAYS_MS : TEST_RETRY_DELAYS_MS)
    const v2Events = new Map<string, V2Event>()
    const thinBodies = new Map<string, string>()

    const send = Effect.fn("EmulatorWebhooks.deliver")(function* (event: StripeEvent) {
      yield* Effect.annotateCurrentSpan({ "stripe.event_type": event.type })
      const t = target
      const attempt = (attempts.get(event.id) ?? 0) + 1
      attempts.set(event.id, attempt)
      const atMs = yield* options.now
      if (!t) {
        const r: DeliveryRecord = { eventId: event.id, type: event.type, attempt, status: null, error: "no webhook target", atMs, durationMs: 0 }
        records.push(r)
        return r
      }
      // Stripe pretty-prints event bodies; receivers must verify the exact bytes.
      const payload = thinBodies.get(event.id) ?? JSON.stringify(event, null, 2)
      const ts = Math.floor(atMs / 1000) + (signing.timestampOffsetSeconds ?? 0)
      const secrets = [t.secret, ...(signing.extraSecrets ?? [])]
      const header = signatureHeader(signing.tamper ? `${payload} ` : payload, secrets, ts)
      const [elapsed, result] = yield* Effect.tryPromise({
        try: async (signal) => {
          const res = await fetch(t.url, {
            method: "POST",
            headers: {
              "content-type": "application/json; charset=utf-8",
              "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
              "stripe-signature": header
            },
            body: payload,
            signal: AbortSignal.any([signal, AbortSignal.timeout(DELIVERY_TIMEOUT_MS)])
          })
          await res.arrayBuffer().catch(() => undefined)
          return res.status
        },
        catch: (e) => (e instanceof Error ? e.message : String(e))
      }).pipe(Effect.either, Effect.timed)
      const durationMs = Duration.toMillis(elapsed)
      const r: DeliveryRecord =
        result._tag === "Right"
          ? { eventId: event.id, type: event.type, attempt, status: result.right, atMs, durationMs }
          : {
              eventId: event.id,
              type: event.type,
              attempt,
              status: null,
              error: result.left,
              atMs,
              durationMs
            }
      records.push(r)
      return r
    })

    const ok = (r: DeliveryRecord) => r.status !== null && r.status >= 200 && r.status < 300
    /** Sends, and on a non-2xx answer schedules the next retry of the back-off schedule. */
    const sendWithRetries = (event: StripeEvent, retry = 0): Effect.Effect<void> =>
      Effect.gen(function* () {
        const r = yield* send(event)
        const delay = retryDelays[retry]
        if (ok(r) || delay === undefined || !target) return
        runRetry(Effect.zipRight(Effect.sleep(delay), sendWithRetries(event, retry + 1)))
      })
    const sendWithDelay = (event: StripeEvent, copies: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (delayMs > 0) yield* Effect.sleep(delayMs)
        for (let i = 0; i <= copies; i++) yield* sendWithRetries(event)
      })

    const dispatch = (event: StripeEvent): void => {
      let copies = 0
      if (duplicate.times > 0) {
        copies = duplicate.copies
        duplicate = { copies: duplicate.copies, times: duplicate.times - 1 }
      }
      if (holding) {
        for (let i = 0; i <= copies; i++) heldEvents.push(event)
        return
      }
      runFork(sendWithDelay(event, copies))
    }

    const manager: WebhookManager = {
      setTarget: (t) => {
        target = t
      },
      target: () => target,
      emit: (type, object, opts = {}) =>
        Effect.gen(function* () {
          const nowMs = yield* options.now
          const event: StripeEvent = {
            id: stripeId("evt", 24),
            object: "event",
            api_version: EMULATOR_API_VERSION,
            created: Math.floor(nowMs / 1000),
            data: opts.previous && Object.keys(opts.previous).length > 0 ? { object, previous_attributes: opts.previous } : { object },
            livemode: options.livemode,
            pending_webhooks: target ? 1 : 0,
            request: { id: opts.requestId ?? null, idempotency_key: opts.idempotencyKey ?? null },
            type
          }
          events.set(event.id, event)
          order.push(event.id)
          if (target) dispatch(event)
          return event
        }),
      emitV2: (type, relatedObject, data) =>
        Effect.gen(function* () {
          const nowMs = yield* options.now
          const full: V2Event = {
            id: stripeId(options.livemode ? "evt" : "evt_test", 40),
            object: "v2.core.event",
            type,
            created: new Date(nowMs).toISOString(),
            livemode: options.livemode,
            context: null,
            reason: null,
            related_object: relatedObject,
            data
          }
          v2Events.set(full.id, full)
          const { data: _data, ...thin } = full
          thinBodies.set(full.id, JSON.stringify(thin, null, 2))
          // Delivered through the same path as v1 events (signature, retries, hold, duplicates).
          const carrier = { id: full.id, type } as unknown as StripeEvent
          events.set(full.id, carrier)
          if (target) dispatch(carrier)
          return full
        }),
      v2Event: (id) => v2Events.get(id),
      setRetryDelays: (delays) => {
        retryDelays = delays
      },
      event: (id) => (v2Events.has(id) ? undefined : events.get(id)),
      eventOrder: () => order,
      duplicateNext: (copies = 1, times = 1) => {
        duplicate = { copies, times }
      },
      hold: () => {
        holding = true
      },
      held: () => heldEvents.slice(),
      release: (releaseOrder) =>
        Effect.gen(function* () {
          holding = false
          const pending = heldEvents
          heldEvents = []
          let sequence: Array<StripeEvent>
          if (releaseOrder === "reverse") sequence = pending.slice().reverse()
          else if (releaseOrder === undefined) sequence = pending
          else {
            const first: Array<StripeEvent> = []
            const rest = pending.slice()
            for (const id of releaseOrder) {
              const i = rest.findIndex((e) => e.id === id)
              if (i >= 0) first.push(...rest.splice(i, 1))
            }
            sequence = [...first, ...rest]
          }
          const out: Array<DeliveryRecord> = []
          for (const e of sequence) {
            if (delayMs > 0) yield* Effect.sleep(delayMs)
            out.push(yield* send(e))
          }
          return out
        }),
      setDelay: (ms) => {
        delayMs = ms
      },
      setSigning: (s) => {
        signing = s
      },
      redeliver: (eventId) => {
        const e = events.get(eventId)
        return e ? send(e) : Effect.fail(new Error(`no such event: ${eventId}`))
      },
      flush: FiberSet.awaitEmpty(fibers),
      log: () => records.slice(),
      events: () => order.map((id) => events.get(id)!).filter((e) => !v2Events.has(e.id))
    }
    return manager
  })

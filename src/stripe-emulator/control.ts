/**
 * The `/_emulator/*` control plane: what a test or the demo does to the emulated account from
 * outside Stripe's API — inject faults, hold requests, move the clock, roll keys, point webhooks
 * and the v2 event destination at the service, and inspect what Stripe received. Bodies are JSON
 * decoded with Schema; a bad body answers 400 naming the field.
 */
import { HttpRouter, HttpServerRequest } from "@effect/platform"
import { Data, Effect, ParseResult, Redacted, Schema } from "effect"
import { randomBytes } from "node:crypto"
import type { EmulatorContext } from "./context.js"
import { faultConfigFromJson } from "./faults.js"
import { attempt, jsonReply } from "./http.js"
import { rateLimitsFromJson } from "./limits.js"
import { releaseHeld } from "./middleware/holds.js"

const bad = (message: string) => jsonReply({ error: { type: "invalid_request_error", message } }, 400)

class BadControlRequest extends Data.TaggedError("BadControlRequest")<{ readonly message: string }> {}

/** Decodes the JSON body (empty = `{}`), or answers 400 with what was wrong. */
const body = <A, I>(schema: Schema.Schema<A, I>) =>
  Effect.flatMap(Effect.orElseSucceed(HttpServerRequest.HttpServerRequest.pipe(Effect.flatMap((r) => r.text)), () => ""), (text) =>
    Effect.try({ try: () => (text === "" ? {} : (JSON.parse(text) as unknown)), catch: () => new BadControlRequest({ message: "invalid JSON" }) }).pipe(
      Effect.flatMap((json) =>
        Schema.decodeUnknown(schema)(json).pipe(
          Effect.mapError((e) => new BadControlRequest({ message: ParseResult.TreeFormatter.formatErrorSync(e) }))
        )
      )
    )
  )

/** A body a module of its own decodes (fault and rate-limit configs), its messages kept. */
const decodedBy = <A>(decode: (json: unknown) => A) =>
  Effect.flatMap(body(Schema.Unknown), (json) =>
    Effect.try({ try: () => decode(json), catch: (e) => new BadControlRequest({ message: e instanceof Error ? e.message : String(e) }) })
  )

const NonNegative = Schema.Number.pipe(Schema.nonNegative())
const Target = Schema.Struct({ url: Schema.String, secret: Schema.String })
const Hold = Schema.Struct({
  method: Schema.optional(Schema.String),
  path_prefix: Schema.optional(Schema.String),
  count: Schema.optional(Schema.Int.pipe(Schema.nonNegative())),
  apply_first: Schema.optional(Schema.Boolean)
})
const Settings = Schema.Struct({
  summary_delay_ms: Schema.optional(NonNegative),
  v1_concurrency_limit: Schema.optional(Schema.Boolean),
  webhook_retry_delays_ms: Schema.optional(Schema.Array(NonNegative))
})
const MeterSetup = Schema.Struct({
  display_name: Schema.String,
  event_name: Schema.String,
  formula: Schema.optional(Schema.Literal("sum", "count", "last")),
  event_time_window: Schema.optional(Schema.Literal("hour", "day")),
  customer_key: Schema.optional(Schema.String),
  value_key: Schema.optional(Schema.String)
})

/**
 * Issues a new secret key (same mode) and expires every active one after `expireAfterMs`
 * (0 = now). Returns the new key (https://docs.stripe.com/keys#rolling-keys).
 */
export const rollKeys = (ctx: EmulatorContext, expireAfterMs: number): Effect.Effect<string> =>
  Effect.gen(function* () {
    const old = Array.from(ctx.keys).filter(([, status]) => status === "active").map(([k]) => k)
    const fresh = `${ctx.livemode ? "sk_live_" : "sk_test_"}${randomBytes(24).toString("base64url").replace(/[-_]/g, "0")}`
    ctx.keys.set(fresh, "active")
    const expire = () => {
      for (const k of old) ctx.keys.set(k, "expired")
    }
    if (expireAfterMs <= 0) expire()
    else yield* Effect.forkDaemon(Effect.zipRight(Effect.sleep(expireAfterMs), Effect.sync(expire)))
    return fresh
  })

export const inspectMeterEvents = (ctx: EmulatorContext) => ({
  totals: ctx.state.totalsList().map((t) => ({ customer: t.customer, event_name: t.eventName, sum: t.sum, count: t.count })),
  events_accepted: ctx.state.meterEvents().length,
  v1_concurrent_same_customer_meter: ctx.counters.v1Overlaps,
  duplicates_ignored: ctx.state.duplicatesIgnored,
  stream_errors: ctx.state.streamErrors().map((e) => ({
    identifier: e.identifier ?? null,
    event_name: e.eventName ?? null,
    code: e.code,
    message: e.message
  })),
  calls: Object.fromEntries(ctx.counters.byEndpoint)
})

export const inspectRequests = (ctx: EmulatorContext) => ({
  total: ctx.counters.total,
  by_endpoint: Object.fromEntries(ctx.counters.byEndpoint),
  by_status: Object.fromEntries(ctx.counters.byStatus),
  faults_injected: ctx.faults.injected,
  held: ctx.held.length
})

export const makeControl = (ctx: EmulatorContext) =>
  HttpRouter.empty.pipe(
    HttpRouter.get("/_emulator/health", Effect.succeed(jsonReply({ ok: true }))),
    HttpRouter.get("/_emulator/meter_events", Effect.sync(() => jsonReply(inspectMeterEvents(ctx)))),
    HttpRouter.get("/_emulator/requests", Effect.sync(() => jsonReply(inspectRequests(ctx)))),
    HttpRouter.get("/_emulator/faults", Effect.sync(() => jsonReply(ctx.faults.current()))),
    HttpRouter.get("/_emulator/webhooks/deliveries", Effect.sync(() => jsonReply({ deliveries: ctx.webhooks.log() }))),
    HttpRouter.del(
      "/_emulator/faults",
      Effect.sync(() => {
        ctx.faults.reset()
        return jsonReply({ ok: true })
      })
    ),
    HttpRouter.post(
      "/_emulator/faults",
      Effect.gen(function* () {
        const config = yield* decodedBy(faultConfigFromJson)
        const now = yield* ctx.now
        const applied = ctx.faults.set(config, now)
        if (config.expireSessions) ctx.state.expireAllSessions(now)
        return jsonReply(applied)
      })
    ),
    HttpRouter.post(
      "/_emulator/hold",
      Effect.gen(function* () {
        const b = yield* body(Hold)
        const m = b.method?.toUpperCase()
        const prefix = b.path_prefix ?? ""
        ctx.holdRules.push({
          match: (r) => (m === undefined || r.method === m) && r.path.startsWith(prefix),
          remaining: b.count ?? 1,
          applyFirst: b.apply_first !== false
        })
        return jsonReply({ ok: true })
      })
    ),
    HttpRouter.post("/_emulator/release", Effect.map(releaseHeld(ctx), (n) => jsonReply({ released: n }))),
    HttpRouter.post(
      "/_emulator/clock",
      Effect.gen(function* () {
        const b = yield* body(Schema.Struct({ advance_seconds: Schema.Number }))
        ctx.advanceClock(b.advance_seconds * 1000)
        return jsonReply({ now: Math.floor((yield* ctx.now) / 1000) })
      })
    ),
    HttpRouter.post(
      "/_emulator/webhooks",
      Effect.gen(function* () {
        const b = yield* body(Target)
        ctx.webhooks.setTarget({ url: b.url, secret: Redacted.make(b.secret) })
        return jsonReply({ ok: true })
      })
    ),
    HttpRouter.post(
      "/_emulator/event_destination",
      Effect.gen(function* () {
        const b = yield* body(Target)
        ctx.eventDestination.setTarget({ url: b.url, secret: Redacted.make(b.secret) })
        return jsonReply({ ok: true })
      })
    ),
    HttpRouter.post(
      "/_emulator/customers",
      // Bulk setup for benchmarks against a separate emulator process: `count` empty customers as
      // POST /v1/customers would create them (customer.created emitted), in one request.
      Effect.gen(function* () {
        const { count } = yield* body(Schema.Struct({ count: Schema.Int.pipe(Schema.between(1, 100_000)) }))
        const now = yield* ctx.now
        const ids: Array<string> = []
        for (let i = 0; i < count; i++) {
          const customer = ctx.state.createCustomer({}, now)
          yield* ctx.webhooks.emit("customer.created", customer)
          ids.push(customer.id)
        }
        return jsonReply({ ids })
      })
    ),
    HttpRouter.post(
      "/_emulator/rate_limits",
      // `{"off": true}` lifts every limit; otherwise any of test_mode, live_v1_meter_events,
      // live_stream, live_other (the rest keep Stripe's values).
      Effect.gen(function* () {
        const limits = yield* decodedBy(rateLimitsFromJson)
        ctx.rateLimiter.set(limits)
        return jsonReply({ rate_limits: ctx.rateLimiter.current() ?? null })
      })
    ),
    HttpRouter.post(
      "/_emulator/settings",
      Effect.gen(function* () {
        const b = yield* body(Settings)
        if (b.summary_delay_ms !== undefined) ctx.summaryDelayMs = b.summary_delay_ms
        if (b.v1_concurrency_limit !== undefined) ctx.v1ConcurrencyLimit = b.v1_concurrency_limit
        if (b.webhook_retry_delays_ms !== undefined) {
          ctx.webhooks.setRetryDelays([...b.webhook_retry_delays_ms])
          ctx.eventDestination.setRetryDelays([...b.webhook_retry_delays_ms])
        }
        return jsonReply({ summary_delay_ms: ctx.summaryDelayMs, v1_concurrency_limit: ctx.v1ConcurrencyLimit })
      })
    ),
    HttpRouter.post(
      "/_emulator/meters",
      // Meters with fields the product never sets itself, e.g. a pre-aggregated one.
      Effect.gen(function* () {
        const b = yield* body(MeterSetup)
        const now = yield* ctx.now
        const created = yield* Effect.either(
          attempt(() =>
            ctx.state.createMeter(
              {
                display_name: b.display_name,
                event_name: b.event_name,
                default_aggregation: { formula: b.formula ?? "sum" },
                ...(b.event_time_window !== undefined ? { event_time_window: b.event_time_window } : {}),
                ...(b.customer_key !== undefined ? { customer_mapping: { event_payload_key: b.customer_key } } : {}),
                ...(b.value_key !== undefined ? { value_settings: { event_payload_key: b.value_key } } : {})
              },
              now
            )
          )
        )
        return created._tag === "Left" ? bad(created.left.message) : jsonReply(created.right)
      })
    ),
    HttpRouter.post(
      "/_emulator/keys/roll",
      // The control plane is the emulated Dashboard: it answers the new key.
      Effect.gen(function* () {
        const b = yield* body(Schema.Struct({ expire_after_seconds: Schema.optional(NonNegative) }))
        return jsonReply({ api_key: yield* rollKeys(ctx, (b.expire_after_seconds ?? 0) * 1000) })
      })
    )
  ).pipe(
    Effect.catchTags({
      BadControlRequest: (e) => Effect.succeed(bad(e.message)),
      RouteNotFound: (e) =>
        Effect.succeed(
          jsonReply(
            {
              error: {
                type: "invalid_request_error",
                message: `unknown control route ${e.request.method} ${e.request.url.split("?")[0]}`
              }
            },
            404
          )
        )
    })
  )

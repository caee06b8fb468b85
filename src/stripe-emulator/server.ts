/**
 * The emulator's HTTP surface: Stripe's routes on an @effect/platform HttpRouter, wrapped by the
 * cross-cutting parts Stripe applies to every call (request ids, fault injection, auth,
 * idempotency keys) plus the `/_emulator/*` control plane used by tests and the demo.
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Context, Deferred, Effect, Redacted } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { errorBody, invalidParam, invalidRequest, maskKey, missingParam, StripeEmulatorError } from "./errors.js"
import { Faults, faultConfigFromJson } from "./faults.js"
import { decodeForm, type FormObject, obj, str } from "./form.js"
import {
  EmulatorState,
  MAX_STREAM_EVENTS,
  type MeterEventInput,
  type MeterEventRecord,
  parseRfc3339,
  stripeId
} from "./state.js"
import type { WebhookManager } from "./webhooks.js"
import { type RateLimiter, rateLimitsFromJson } from "./limits.js"
import { stringifyJson } from "../domain/Json.js"

// ------------------------------------------------------------------------------------------ shared

export interface HoldRule {
  readonly match: (request: { readonly method: string; readonly path: string }) => boolean
  remaining: number
  /** true: the request is applied, then its answer is held; false: held before it is applied. */
  readonly applyFirst: boolean
}

export interface HeldRequest {
  readonly method: string
  readonly path: string
  readonly applied: boolean
  readonly deferred: Deferred.Deferred<void>
}

export interface Counters {
  total: number
  /** v1 meter event calls that arrived while another for the same (meter, customer) was in flight. */
  v1Overlaps: number
  readonly byEndpoint: Map<string, number>
  readonly byStatus: Map<number, number>
}

export interface EmulatorContext {
  /**
   * The account's secret keys: "active", or "expired" once rolled
   * (https://docs.stripe.com/keys#rolling-keys). Values are the raw keys; never logged or echoed.
   */
  readonly keys: Map<string, "active" | "expired">
  readonly livemode: boolean
  readonly state: EmulatorState
  readonly faults: Faults
  readonly webhooks: WebhookManager
  readonly now: Effect.Effect<number>
  readonly advanceClock: (ms: number) => void
  readonly counters: Counters
  readonly holdRules: Array<HoldRule>
  readonly held: Array<HeldRequest>
  readonly heldWaiters: Array<{ readonly n: number; readonly deferred: Deferred.Deferred<void> }>
  readonly idempotency: Map<string, StoredResponse | "in_flight">
  readonly v1InFlight: Map<string, number>
  readonly streamValidation: "async" | "sync"
  readonly rateLimiter: RateLimiter
  /** Refuse a v1 meter event while another for the same customer + meter is in flight. */
  v1ConcurrencyLimit: boolean
  /** How long an accepted event takes to show in event summaries. */
  summaryDelayMs: number
  /** The v2 event destination (thin events such as `v1.billing.meter.error_report_triggered`). */
  readonly eventDestination: WebhookManager
}

interface StoredResponse {
  readonly fingerprint: string
  readonly status: number
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

/** Per-request facts the wrapper computes once and the route handlers read. */
export class RequestInfo extends Context.Tag("StripeEmulator/RequestInfo")<
  RequestInfo,
  {
    readonly requestId: string
    readonly body: string
    readonly query: FormObject
    readonly idempotencyKey: string | null
  }
>() {}

const newRequestId = (): string => `req_${randomBytes(9).toString("base64url").replace(/[-_]/g, "0")}`

const jsonReply = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  HttpServerResponse.text(stringifyJson(body), { status, contentType: "application/json", headers })

const errorReply = (e: StripeEmulatorError, requestId: string) =>
  jsonReply(errorBody(e, requestId), e.status, { ...(e.headers ?? {}) })

/** Runs synchronous state code; StripeEmulatorErrors it throws become typed failures. */
const attempt = <A>(f: () => A): Effect.Effect<A, StripeEmulatorError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      if (e instanceof StripeEmulatorError) return Effect.fail(e)
      return Effect.die(e)
    }
  })

const parseIntParam = (raw: string | undefined, param: string): number | undefined => {
  if (raw === undefined || raw === "") return undefined
  if (!/^-?\d+$/.test(raw)) throw invalidParam(param, `Invalid integer: ${raw}`)
  return Number(raw)
}

const listParams = (q: FormObject) => {
  const limit = parseIntParam(str(q, "limit"), "limit")
  if (limit !== undefined && (limit < 1 || limit > 100)) {
    throw invalidParam("limit", "This value must be greater than or equal to 1 and less than or equal to 100.")
  }
  return { limit, startingAfter: str(q, "starting_after"), endingBefore: str(q, "ending_before") }
}

const list = (data: ReadonlyArray<unknown>, hasMore: boolean, url: string) => ({ object: "list", data, has_more: hasMore, url })

/** Endpoint key for counters: ids collapse to `:id` so `GET /v1/customers/cus_1` and `_2` count together. */
export const endpointKey = (method: string, path: string): string =>
  `${method} ${path.replace(/\/(cus|mtr|evt|acct)_[A-Za-z0-9]+/g, "/$1_:id")}`

// ------------------------------------------------------------------------------------------ routes

const makeRouter = (ctx: EmulatorContext) => {
  const { state, webhooks } = ctx
  const form = Effect.map(RequestInfo, (i) => decodeForm(i.body))

  const account = Effect.gen(function* () {
    const now = yield* ctx.now
    return jsonReply({
      id: state.accountId,
      object: "account",
      business_profile: { name: "FlexPrice Stripe emulator", url: null },
      business_type: "company",
      capabilities: {},
      charges_enabled: true,
      country: "US",
      created: Math.floor(now / 1000) - 86400,
      default_currency: "usd",
      details_submitted: true,
      email: "emulator@example.com",
      livemode: ctx.livemode,
      metadata: {},
      payouts_enabled: true,
      // account_settings requires branding, card_payments, dashboard and payments (Stripe's
      // OpenAPI description; the conformance test checks it).
      settings: {
        branding: { icon: null, logo: null, primary_color: null, secondary_color: null },
        card_payments: { decline_on: { avs_failure: false, cvc_failure: false }, statement_descriptor_prefix: null },
        dashboard: { display_name: "FlexPrice emulator", timezone: "Etc/UTC" },
        payments: { statement_descriptor: null }
      },
      type: "standard"
    })
  })

  const customerId = Effect.map(HttpRouter.params, (p) => p.id ?? "")

  return HttpRouter.empty.pipe(
    HttpRouter.get("/v1/account", account),
    HttpRouter.post(
      "/v1/customers",
      Effect.gen(function* () {
        const body = yield* form
        const info = yield* RequestInfo
        const now = yield* ctx.now
        const customer = yield* attempt(() => state.createCustomer(body, now))
        yield* webhooks.emit("customer.created", customer, { requestId: info.requestId, idempotencyKey: info.idempotencyKey })
        return jsonReply(customer)
      })
    ),
    HttpRouter.get(
      "/v1/customers",
      Effect.gen(function* () {
        const { query } = yield* RequestInfo
        const page = yield* attempt(() => state.listCustomers({ ...listParams(query), email: str(query, "email") }))
        return jsonReply(list(page.data, page.hasMore, "/v1/customers"))
      })
    ),
    HttpRouter.get(
      "/v1/customers/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        return jsonReply(yield* attempt(() => state.retrieveCustomer(id)))
      })
    ),
    HttpRouter.post(
      "/v1/customers/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        const body = yield* form
        const info = yield* RequestInfo
        const { customer, previous } = yield* attempt(() => state.updateCustomer(id, body))
        yield* webhooks.emit("customer.updated", customer, {
          previous,
          requestId: info.requestId,
          idempotencyKey: info.idempotencyKey
        })
        return jsonReply(customer)
      })
    ),
    HttpRouter.del(
      "/v1/customers/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        const info = yield* RequestInfo
        const { deleted, customer } = yield* attempt(() => state.deleteCustomer(id))
        yield* webhooks.emit("customer.deleted", customer, { requestId: info.requestId, idempotencyKey: info.idempotencyKey })
        return jsonReply(deleted)
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters",
      Effect.gen(function* () {
        const body = yield* form
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.createMeter(body, now)))
      })
    ),
    HttpRouter.get(
      "/v1/billing/meters",
      Effect.gen(function* () {
        const { query } = yield* RequestInfo
        const page = yield* attempt(() => state.listMeters({ ...listParams(query), status: str(query, "status") }))
        return jsonReply(list(page.data, page.hasMore, "/v1/billing/meters"))
      })
    ),
    HttpRouter.get(
      "/v1/billing/meters/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        return jsonReply(yield* attempt(() => state.retrieveMeter(id)))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        const body = yield* form
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.updateMeter(id, body, now)))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters/:id/deactivate",
      Effect.gen(function* () {
        const id = yield* customerId
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.setMeterStatus(id, "inactive", now)))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters/:id/reactivate",
      Effect.gen(function* () {
        const id = yield* customerId
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.setMeterStatus(id, "active", now)))
      })
    ),
    HttpRouter.get(
      "/v1/billing/meters/:id/event_summaries",
      Effect.gen(function* () {
        const id = yield* customerId
        const { query } = yield* RequestInfo
        const now = yield* ctx.now
        const page = yield* attempt(() => {
          const customer = str(query, "customer")
          if (!customer) throw missingParam("customer")
          const start = parseIntParam(str(query, "start_time"), "start_time")
          if (start === undefined) throw missingParam("start_time")
          const end = parseIntParam(str(query, "end_time"), "end_time")
          if (end === undefined) throw missingParam("end_time")
          if (start % 60 !== 0) throw invalidParam("start_time", "start_time must be aligned with minute boundaries.")
          if (end % 60 !== 0) throw invalidParam("end_time", "end_time must be aligned with minute boundaries.")
          if (end <= start) throw invalidParam("end_time", "end_time must be after start_time.")
          const grouping = str(query, "value_grouping_window")
          if (grouping !== undefined && grouping !== "hour" && grouping !== "day") {
            throw invalidParam("value_grouping_window", "value_grouping_window must be one of day or hour.")
          }
          // "For hourly granularity, start and end times must align with hour boundaries (e.g.,
          // 00:00, 01:00, ..., 23:00). For daily granularity, start and end times must align with
          // UTC day boundaries (00:00 UTC)."
          // (https://docs.stripe.com/api/billing/meter-event-summary/list#list_billing_meter_event_summaries-value_grouping_window)
          const unit = grouping === "hour" ? 3600 : grouping === "day" ? 86400 : undefined
          if (unit !== undefined && (start % unit !== 0 || end % unit !== 0)) {
            throw invalidParam(
              start % unit !== 0 ? "start_time" : "end_time",
              `start_time and end_time must be aligned with ${grouping} boundaries when value_grouping_window is ${grouping}.`
            )
          }
          const { limit, startingAfter, endingBefore } = listParams(query)
          const all = state
            .summaries({ meterId: id, customer, start, end, grouping, visibleBeforeMs: now - ctx.summaryDelayMs })
            .map((b) => ({
            id: `mtrusg_${ctx.livemode ? "" : "test_"}${b.start}_${b.end}`,
            object: "billing.meter_event_summary",
            aggregated_value: b.value,
            end_time: b.end,
            livemode: ctx.livemode,
            meter: id,
            start_time: b.start
          }))
          const n = limit ?? 10
          let from = 0
          let to = all.length
          if (startingAfter !== undefined) {
            const i = all.findIndex((s) => s.id === startingAfter)
            if (i < 0) throw invalidParam("starting_after", `No such billing.meter_event_summary: '${startingAfter}'`)
            from = i + 1
          } else if (endingBefore !== undefined) {
            const i = all.findIndex((s) => s.id === endingBefore)
            if (i < 0) throw invalidParam("ending_before", `No such billing.meter_event_summary: '${endingBefore}'`)
            to = i
            from = Math.max(0, to - n)
            return { data: all.slice(from, to), hasMore: from > 0 }
          }
          return { data: all.slice(from, from + n), hasMore: from + n < to }
        })
        return jsonReply(list(page.data, page.hasMore, `/v1/billing/meters/${id}/event_summaries`))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meter_events",
      Effect.gen(function* () {
        const body = yield* form
        const now = yield* ctx.now
        const record = yield* attempt(() => {
          const timestamp = parseIntParam(str(body, "timestamp"), "timestamp")
          const payload = obj(body, "payload")
          const input: MeterEventInput = {
            event_name: str(body, "event_name"),
            payload,
            identifier: str(body, "identifier"),
            timestamp
          }
          const r = state.validateMeterEvent(input, now, "v1")
          const duplicate = state.isDuplicate(r.identifier, now)
          state.recordReceived(r, duplicate ? "duplicate" : "accepted", now)
          if (duplicate) {
            throw invalidRequest(`An event already exists with identifier ${r.identifier}.`, {
              code: "resource_already_exists",
              param: "identifier"
            })
          }
          state.commitMeterEvent(r)
          return r
        })
        return jsonReply(state.toMeterEvent(record))
      })
    ),
    HttpRouter.get(
      "/v1/events",
      Effect.gen(function* () {
        const { query } = yield* RequestInfo
        const type = str(query, "type")
        const page = yield* attempt(() => {
          const order = webhooks.eventOrder()
          const index = new Map<string, number>()
          order.forEach((id, i) => index.set(id, i))
          const p = listParams(query)
          const out: Array<unknown> = []
          const n = p.limit ?? 10
          let i = p.startingAfter !== undefined ? (index.get(p.startingAfter) ?? -1) - 1 : order.length - 1
          for (; i >= 0 && out.length < n; i--) {
            const e = webhooks.event(order[i]!)!
            if (type === undefined || e.type === type) out.push(e)
          }
          let hasMore = false
          for (; i >= 0 && !hasMore; i--) if (type === undefined || webhooks.event(order[i]!)!.type === type) hasMore = true
          return { data: out, hasMore }
        })
        return jsonReply(list(page.data, page.hasMore, "/v1/events"))
      })
    ),
    HttpRouter.get(
      "/v1/events/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        const e = webhooks.event(id)
        if (!e) return yield* Effect.fail(invalidRequest(`No such event: '${id}'`, { code: "resource_missing", status: 404 }))
        return jsonReply(e)
      })
    ),
    HttpRouter.get(
      "/v2/core/events/:id",
      Effect.gen(function* () {
        const id = yield* customerId
        const e = ctx.eventDestination.v2Event(id)
        if (!e) {
          return yield* Effect.fail(
            new StripeEmulatorError({ status: 404, type: "not_found", code: "not_found", message: `No such event: '${id}'` })
          )
        }
        return jsonReply(e)
      })
    ),
    HttpRouter.post(
      "/v2/billing/meter_event_session",
      Effect.gen(function* () {
        const now = yield* ctx.now
        return jsonReply(state.createSession(now))
      })
    ),
    HttpRouter.post(
      "/v2/billing/meter_event_stream",
      Effect.gen(function* () {
        const { body } = yield* RequestInfo
        const now = yield* ctx.now
        yield* attempt(() => {
          const inputs = decodeStreamBody(body)
          const accepted: Array<MeterEventRecord> = []
          const failures: Array<{ input: MeterEventInput; error: StripeEmulatorError }> = []
          for (const input of inputs) {
            try {
              accepted.push(state.validateMeterEvent(input, now, "v2"))
            } catch (e) {
              if (!(e instanceof StripeEmulatorError)) throw e
              failures.push({ input, error: e })
            }
          }
          if (ctx.streamValidation === "sync" && failures.length > 0) {
            const f = failures[0]!
            throw invalidRequest(`events: ${f.error.message}`, { code: "invalid_fields" })
          }
          // Stripe processes stream events asynchronously: invalid ones are dropped and reported
          // later, not here.
          for (const f of failures) {
            state.recordStreamError({
              identifier: f.input.identifier,
              eventName: f.input.event_name,
              code: f.error.asyncCode ?? f.error.code ?? "invalid",
              message: f.error.message,
              atMs: now
            })
          }
          for (const r of accepted) {
            const duplicate = state.isDuplicate(r.identifier, now)
            state.recordReceived(r, duplicate ? "duplicate" : "accepted", now)
            if (duplicate) state.duplicatesIgnored++
            else state.commitMeterEvent(r)
          }
          return failures
        }).pipe(Effect.flatMap((failures) => reportStreamErrors(ctx, failures, now)))
        return jsonReply({})
      })
    )
  )
}

/**
 * The thin events Stripe sends for dropped stream events: `v1.billing.meter.error_report_triggered`
 * (related object: the meter) with `reason.error_types[]` {code, error_count, sample_errors}, or
 * `v1.billing.meter.no_meter_found` when no meter has the event name
 * (https://docs.stripe.com/api/v2/core/events/event-types,
 * https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#handle-meter-event-errors).
 * One event per meter per stream request here; Stripe batches per validation window.
 */
const reportStreamErrors = (
  ctx: EmulatorContext,
  failures: ReadonlyArray<{ readonly input: MeterEventInput; readonly error: StripeEmulatorError }>,
  nowMs: number
) =>
  Effect.gen(function* () {
    const byMeter = new Map<string, Array<{ readonly input: MeterEventInput; readonly code: string; readonly message: string }>>()
    for (const f of failures) {
      const meter = f.input.event_name !== undefined ? ctx.state.anyMeterByEventName(f.input.event_name) : undefined
      const key = meter?.id ?? ""
      const list = byMeter.get(key) ?? []
      list.push({ input: f.input, code: f.error.asyncCode ?? f.error.code ?? "invalid", message: f.error.message })
      byMeter.set(key, list)
    }
    for (const [meterId, list] of byMeter) {
      const types = new Map<string, Array<(typeof list)[number]>>()
      for (const e of list) types.set(e.code, [...(types.get(e.code) ?? []), e])
      const data = {
        developer_message_summary: `There ${list.length === 1 ? "is 1 invalid event" : `are ${list.length} invalid events`}`,
        reason: {
          error_count: list.length,
          error_types: Array.from(types, ([code, errors]) => ({
            code,
            error_count: errors.length,
            sample_errors: errors.slice(0, 5).map((e) => ({
              error_message: e.message,
              request: { identifier: e.input.identifier ?? "" }
            }))
          }))
        },
        validation_start: new Date(Math.floor(nowMs / 1000) * 1000).toISOString(),
        validation_end: new Date(Math.floor(nowMs / 1000) * 1000 + 1000).toISOString()
      }
      if (meterId === "") {
        yield* ctx.eventDestination.emitV2("v1.billing.meter.no_meter_found", null, data)
      } else {
        yield* ctx.eventDestination.emitV2(
          "v1.billing.meter.error_report_triggered",
          { id: meterId, type: "billing.meter", url: `/v1/billing/meters/${meterId}` },
          data
        )
      }
    }
  })

const v2Invalid = (message: string) => invalidRequest(message, { code: "invalid_fields" })

/** Structural checks of a stream body; a malformed request is refused whole, synchronously. */
const decodeStreamBody = (body: string): ReadonlyArray<MeterEventInput> => {
  let parsed: unknown
  try {
    parsed = body === "" ? {} : JSON.parse(body)
  } catch {
    throw v2Invalid("Request body is not valid JSON.")
  }
  const events = (parsed as { events?: unknown } | null)?.events
  if (!Array.isArray(events)) throw v2Invalid("events: required array is missing.")
  if (events.length === 0) throw v2Invalid("events: at least one event is required.")
  if (events.length > MAX_STREAM_EVENTS) {
    throw v2Invalid(`events: at most ${MAX_STREAM_EVENTS} events are allowed per request, got ${events.length}.`)
  }
  return events.map((e, i): MeterEventInput => {
    if (typeof e !== "object" || e === null) throw v2Invalid(`events[${i}]: must be an object.`)
    const ev = e as Record<string, unknown>
    if (typeof ev.event_name !== "string" || ev.event_name === "") throw v2Invalid(`events[${i}].event_name: required.`)
    if (typeof ev.payload !== "object" || ev.payload === null || Array.isArray(ev.payload)) {
      throw v2Invalid(`events[${i}].payload: required object.`)
    }
    for (const [k, v] of Object.entries(ev.payload)) {
      if (typeof v !== "string") throw v2Invalid(`events[${i}].payload.${k}: must be a string.`)
    }
    if (ev.identifier !== undefined && (typeof ev.identifier !== "string" || ev.identifier.length > 100)) {
      throw v2Invalid(`events[${i}].identifier: must be a string of at most 100 characters.`)
    }
    let timestamp: number | undefined
    if (ev.timestamp !== undefined) {
      timestamp = typeof ev.timestamp === "string" ? parseRfc3339(ev.timestamp) : undefined
      if (timestamp === undefined) throw v2Invalid(`events[${i}].timestamp: must be an RFC 3339 timestamp.`)
    }
    return {
      event_name: ev.event_name,
      payload: ev.payload as Record<string, string>,
      identifier: ev.identifier as string | undefined,
      timestamp
    }
  })
}

// ------------------------------------------------------------------------------------------ wrapper

const authFailure = (message: string, v2: boolean, expired = false) =>
  new StripeEmulatorError({
    status: 401,
    type: expired ? "temporary_session_expired" : "invalid_request_error",
    message,
    code: expired ? "billing_meter_event_session_expired" : v2 ? "unauthorized" : undefined
  })

const bearer = (header: string | undefined): string | undefined => {
  if (!header) return undefined
  const b = /^Bearer\s+(.+)$/i.exec(header)
  if (b) return b[1]!.trim()
  const basic = /^Basic\s+(.+)$/i.exec(header)
  if (basic) {
    const decoded = Buffer.from(basic[1]!.trim(), "base64").toString("utf8")
    const colon = decoded.indexOf(":")
    return colon >= 0 ? decoded.slice(0, colon) : decoded
  }
  return undefined
}

const STREAM_PATH = "/v2/billing/meter_event_stream"

/** 429s, auth failures and in-flight conflicts never reach execution, so they are not saved. */
const storable = (status: number) => status !== 429 && status !== 401 && status !== 409

/** Errors Stripe raises while validating parameters, before the endpoint executes. */
const VALIDATION_CODES = new Set(["parameter_missing", "parameter_invalid", "parameter_invalid_integer", "parameter_unknown"])

const bump = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1)

/** One API request and the emulator's answer, as the OpenAPI conformance test checks them. */
export interface Exchange {
  readonly method: string
  readonly path: string
  readonly query: string
  readonly requestBody: string
  readonly requestContentType: string
  readonly status: number
  readonly responseBody: string
}

const recorders = new Set<(exchange: Exchange) => void>()

/**
 * Observes every API exchange of every emulator in this process (control routes excluded) until
 * the returned function is called. For the conformance test against Stripe's OpenAPI description.
 */
export const recordExchanges = (f: (exchange: Exchange) => void): (() => void) => {
  recorders.add(f)
  return () => {
    recorders.delete(f)
  }
}

/** Builds the whole HTTP app (API + control plane) over an emulator context. */
export const makeApp = (ctx: EmulatorContext) => {
  const router = makeRouter(ctx)
  const control = makeControl(ctx)

  const api = (
    request: HttpServerRequest.HttpServerRequest,
    call: {
      readonly path: string
      readonly search: string
      readonly body: string
      readonly concurrent: boolean
      /** Frees the v1 customer + meter slot this request holds (idempotent; a no-op for others). */
      readonly release: Effect.Effect<void>
    }
  ) =>
    Effect.gen(function* () {
      const { path, search, body } = call
      const requestId = newRequestId()
      const v2 = path.startsWith("/v2/")
      const method = request.method
      ctx.counters.total++
      bump(ctx.counters.byEndpoint, endpointKey(method, path))

      const respond = (res: HttpServerResponse.HttpServerResponse) => {
        bump(ctx.counters.byStatus, res.status)
        return res.pipe(
          HttpServerResponse.setHeader("Request-Id", requestId),
          HttpServerResponse.setHeader("Stripe-Version", request.headers["stripe-version"] ?? "2026-10-28.endive")
        )
      }
      const fail = (e: StripeEmulatorError) => respond(errorReply(e, requestId))

      const rateLimited = (message: string) => {
        const retryAfter = ctx.faults.retryAfterSeconds()
        return fail(
          new StripeEmulatorError({
            status: 429,
            type: v2 ? "rate_limit" : "invalid_request_error",
            code: "rate_limit",
            message,
            headers: {
              "Stripe-Should-Retry": "true",
              ...(retryAfter !== undefined ? { "Retry-After": String(retryAfter) } : {})
            }
          })
        )
      }
      // Rate limits (limits.ts): over the limit → 429 before anything runs, never saved under an
      // Idempotency-Key.
      if (!ctx.rateLimiter.admit(method, path)) {
        return rateLimited(
          "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits."
        )
      }

      const latency = ctx.faults.latencyMs(path)
      if (latency > 0) yield* Effect.sleep(latency)
      const decision = ctx.faults.decide(path, yield* ctx.now)
      // A 500 on a POST with an Idempotency-Key happens while the endpoint executes, so it is
      // saved and replayed like any other result (handled after auth and the key lookup below).
      let executionFailure: { readonly status: number } | undefined
      switch (decision._tag) {
        case "drop": {
          bump(ctx.counters.byStatus, 0)
          // The request never executes, so it holds no v1 customer + meter slot: freed before the
          // socket closes (the handler fiber below never ends, so `ensuring` would never free it
          // and every later call for the pair would be refused as concurrent). Stripe's rule
          // limits concurrent *calls* (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits);
          // a connection that is gone is no call in flight.
          yield* call.release
          NodeHttpServerRequest.toIncomingMessage(request).socket.destroy()
          return yield* Effect.never
        }
        case "outage":
          return fail(
            new StripeEmulatorError({
              status: 503,
              type: "api_error",
              message: "Stripe is temporarily unavailable (emulated outage).",
              headers: { "Stripe-Should-Retry": "true" }
            })
          )
        case "rate_limit": {
          const retryAfter = ctx.faults.retryAfterSeconds()
          return fail(
            new StripeEmulatorError({
              status: 429,
              type: v2 ? "rate_limit" : "invalid_request_error",
              code: "rate_limit",
              message:
                "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
              headers: {
                "Stripe-Should-Retry": "true",
                ...(retryAfter !== undefined ? { "Retry-After": String(retryAfter) } : {})
              }
            })
          )
        }
        case "server_error":
          if (method === "POST" && request.headers["idempotency-key"] !== undefined) {
            executionFailure = { status: decision.status }
            break
          }
          return fail(
            new StripeEmulatorError({
              status: decision.status,
              type: "api_error",
              message: "An unknown error occurred (emulated).",
              // Not saved under a key: a retry can succeed.
              headers: { "Stripe-Should-Retry": ctx.faults.serverErrorShouldRetry() === false ? "false" : "true" }
            })
          )
        case "none":
          break
      }

      // Auth: the stream takes a session token, everything else the account's API key.
      const token = bearer(request.headers["authorization"])
      const keyStatus = token === undefined ? undefined : ctx.keys.get(token)
      if (token === undefined || token === "") {
        return fail(
          authFailure(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            v2
          )
        )
      }
      if (path === STREAM_PATH) {
        if (keyStatus !== undefined) {
          return fail(authFailure("This endpoint requires a meter event session authentication token.", true))
        }
        const status = ctx.state.checkSession(token, yield* ctx.now)
        if (status !== "valid") {
          return fail(
            authFailure(
              status === "expired"
                ? "The meter event session has expired. Create a new meter event session."
                : "Unknown meter event session token. Create a new meter event session.",
              true,
              true
            )
          )
        }
      } else if (keyStatus === "expired") {
        // A rolled key past its expiry: 401 `api_key_expired`
        // (https://docs.stripe.com/error-codes#api-key-expired, https://docs.stripe.com/keys#rolling-keys).
        return fail(
          new StripeEmulatorError({
            status: 401,
            type: "invalid_request_error",
            code: "api_key_expired",
            message: `Expired API Key provided: ${maskKey(token)}`
          })
        )
      } else if (keyStatus !== "active") {
        return fail(authFailure(`Invalid API Key provided: ${maskKey(token)}`, v2))
      }

      const idempotencyKey = method === "POST" ? (request.headers["idempotency-key"] ?? null) : null
      const fingerprint = createHash("sha256").update(`${method} ${path} ${body}`).digest("base64")
      if (idempotencyKey !== null) {
        const stored = ctx.idempotency.get(idempotencyKey)
        if (stored === "in_flight") {
          return fail(
            new StripeEmulatorError({
              status: 409,
              type: "idempotency_error",
              message: `There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): ${idempotencyKey}. Please try again later.`
            })
          )
        }
        if (stored !== undefined) {
          if (stored.fingerprint !== fingerprint) {
            return fail(
              new StripeEmulatorError({
                status: 400,
                type: "idempotency_error",
                message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`
              })
            )
          }
          return respond(
            HttpServerResponse.uint8Array(stored.body, {
              status: stored.status,
              contentType: "application/json",
              headers: { ...stored.headers, "Idempotent-Replayed": "true", "Original-Request": stored.headers["Request-Id"] ?? "" }
            })
          )
        }
      }

      const rule = ctx.holdRules.find((r) => r.remaining > 0 && r.match({ method, path }))
      if (rule) rule.remaining--
      const hold = (applied: boolean) =>
        Effect.gen(function* () {
          const deferred = yield* Deferred.make<void>()
          const entry: HeldRequest = { method, path, applied, deferred }
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
      if (rule && !rule.applyFirst) yield* hold(false)

      // v1 meter events: "one concurrent call per customer per meter"; the second is refused with
      // a 429 (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#rate-limits).
      // After the key lookup: a replay of a saved result does not execute, so it takes no lock.
      if (call.concurrent && ctx.v1ConcurrencyLimit) {
        return rateLimited(
          "Too many concurrent requests for this customer and meter: at most one meter event call per customer and meter may be in flight."
        )
      }
      if (idempotencyKey !== null && executionFailure !== undefined) {
        // Idempotency (https://docs.stripe.com/api/idempotent_requests): "Stripe's idempotency
        // works by saving the resulting status code and body of the first request made for any
        // given idempotency key, regardless of whether it succeeds or fails. Subsequent requests
        // with the same key return the same result, including 500 errors." A 500 answers
        // `Stripe-Should-Retry: false` unless the fault says otherwise
        // (https://docs.stripe.com/error-low-level#idempotency: the header tells whether a retry
        // with the same key can succeed; a saved 500 never will).
        const e = new StripeEmulatorError({
          status: executionFailure.status,
          type: "api_error",
          message: "An unknown error occurred (emulated).",
          headers: { "Stripe-Should-Retry": ctx.faults.serverErrorShouldRetry() === true ? "true" : "false" }
        })
        const stored: StoredResponse = {
          fingerprint,
          status: e.status,
          body: new TextEncoder().encode(stringifyJson(errorBody(e, requestId))),
          headers: { "Request-Id": requestId, ...(e.headers ?? {}) }
        }
        ctx.idempotency.set(idempotencyKey, stored)
        return fail(e)
      }
      if (idempotencyKey !== null) ctx.idempotency.set(idempotencyKey, "in_flight")
      const info = RequestInfo.of({
        requestId,
        body,
        query: decodeForm(search),
        idempotencyKey
      })
      // "Results are only saved if an API endpoint started executing. If incoming parameters
      // failed validation, or the request conflicted with another that was executing
      // concurrently, no idempotent result is saved" (https://docs.stripe.com/api/idempotent_requests).
      let validationFailure = false
      const response = yield* router.pipe(
        Effect.provideService(RequestInfo, info),
        Effect.catchTags({
          StripeEmulatorError: (e) => {
            validationFailure = e.code !== undefined && VALIDATION_CODES.has(e.code)
            return Effect.succeed(errorReply(e, requestId))
          },
          RouteNotFound: () =>
            Effect.succeed(
              errorReply(
                invalidRequest(
                  `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
                  { status: 404 }
                ),
                requestId
              )
            )
        }),
        Effect.onExit(() =>
          Effect.sync(() => {
            if (idempotencyKey !== null && ctx.idempotency.get(idempotencyKey) === "in_flight") {
              ctx.idempotency.delete(idempotencyKey)
            }
          })
        )
      )
      if (
        idempotencyKey !== null &&
        !validationFailure &&
        storable(response.status) &&
        response.body._tag === "Uint8Array"
      ) {
        ctx.idempotency.set(idempotencyKey, {
          fingerprint,
          status: response.status,
          body: response.body.body,
          headers: { "Request-Id": requestId, ...(response.status >= 400 ? { "Stripe-Should-Retry": "false" } : {}) }
        })
      }
      // Crash tests: Stripe has applied the request; the caller never hears back until release.
      if (rule && rule.applyFirst) yield* hold(true)
      return respond(response)
    })

  return Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const url = request.url
    const q = url.indexOf("?")
    const path = q >= 0 ? url.slice(0, q) : url
    const search = q >= 0 ? url.slice(q + 1) : ""
    if (path.startsWith("/_emulator/")) return yield* control(request, path)
    const method = request.method
    const body = method === "GET" || method === "HEAD" ? "" : yield* Effect.orElseSucceed(request.text, () => "")
    // v1: one concurrent call per customer + meter. Overlaps are counted (tests assert the client
    // keeps it at 0) and, unless `v1ConcurrencyLimit` is off, the second call is refused (see api).
    const pair = method === "POST" && path === "/v1/billing/meter_events" ? ctx.state.pairKey(decodeForm(body)) : undefined
    const record = (res: HttpServerResponse.HttpServerResponse) =>
      Effect.sync(() => {
        if (recorders.size === 0) return
        const text = res.body._tag === "Uint8Array" ? new TextDecoder().decode(res.body.body) : ""
        const exchange: Exchange = {
          method,
          path,
          query: search,
          requestBody: body,
          requestContentType: request.headers["content-type"] ?? "",
          status: res.status,
          responseBody: text
        }
        for (const r of recorders) r(exchange)
      })
    if (pair === undefined) {
      return yield* api(request, { path, search, body, concurrent: false, release: Effect.void }).pipe(Effect.tap(record))
    }
    const inFlight = ctx.v1InFlight.get(pair) ?? 0
    if (inFlight > 0) ctx.counters.v1Overlaps++
    ctx.v1InFlight.set(pair, inFlight + 1)
    let released = false
    const release = Effect.sync(() => {
      if (released) return
      released = true
      const n = (ctx.v1InFlight.get(pair) ?? 1) - 1
      if (n <= 0) ctx.v1InFlight.delete(pair)
      else ctx.v1InFlight.set(pair, n)
    })
    return yield* api(request, { path, search, body, concurrent: inFlight > 0, release }).pipe(
      Effect.tap(record),
      Effect.ensuring(release)
    )
  })
}

// ------------------------------------------------------------------------------------------ control

const makeControl = (ctx: EmulatorContext) => {
  const readJson = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.flatMap(Effect.orElseSucceed(request.text, () => ""), (text) =>
      Effect.try({ try: () => (text === "" ? {} : (JSON.parse(text) as unknown)), catch: () => new Error("invalid JSON") })
    )
  const bad = (message: string) => jsonReply({ error: { type: "invalid_request_error", message } }, 400)

  return (request: HttpServerRequest.HttpServerRequest, path: string) =>
    Effect.gen(function* () {
      const method = request.method
      const route = `${method} ${path}`
      switch (route) {
        case "GET /_emulator/health":
          return jsonReply({ ok: true })
        case "GET /_emulator/meter_events":
          return jsonReply(inspectMeterEvents(ctx))
        case "GET /_emulator/requests":
          return jsonReply(inspectRequests(ctx))
        case "GET /_emulator/faults":
          return jsonReply(ctx.faults.current())
        case "DELETE /_emulator/faults":
          ctx.faults.reset()
          return jsonReply({ ok: true })
        case "POST /_emulator/faults": {
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          let config
          try {
            config = faultConfigFromJson(body.right)
          } catch (e) {
            return bad(e instanceof Error ? e.message : String(e))
          }
          const now = yield* ctx.now
          const applied = ctx.faults.set(config, now)
          if (config.expireSessions) ctx.state.expireAllSessions(now)
          return jsonReply(applied)
        }
        case "POST /_emulator/hold": {
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const b = body.right as { method?: unknown; path_prefix?: unknown; count?: unknown; apply_first?: unknown }
          const m = typeof b.method === "string" ? b.method.toUpperCase() : undefined
          const prefix = typeof b.path_prefix === "string" ? b.path_prefix : ""
          ctx.holdRules.push({
            match: (r) => (m === undefined || r.method === m) && r.path.startsWith(prefix),
            remaining: typeof b.count === "number" ? b.count : 1,
            applyFirst: b.apply_first !== false
          })
          return jsonReply({ ok: true })
        }
        case "POST /_emulator/release": {
          const n = yield* releaseHeld(ctx)
          return jsonReply({ released: n })
        }
        case "POST /_emulator/clock": {
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const s = (body.right as { advance_seconds?: unknown }).advance_seconds
          if (typeof s !== "number") return bad("advance_seconds must be a number")
          ctx.advanceClock(s * 1000)
          return jsonReply({ now: Math.floor((yield* ctx.now) / 1000) })
        }
        case "POST /_emulator/webhooks": {
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const b = body.right as { url?: unknown; secret?: unknown }
          if (typeof b.url !== "string" || typeof b.secret !== "string") return bad("url and secret are required")
          ctx.webhooks.setTarget({ url: b.url, secret: Redacted.make(b.secret) })
          return jsonReply({ ok: true })
        }
        case "POST /_emulator/customers": {
          // Bulk setup for benchmarks against a separate emulator process: `count` empty
          // customers as POST /v1/customers would create them (customer.created emitted), in one request.
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const count = (body.right as { count?: unknown }).count
          if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > 100_000)
            return bad("count must be an integer between 1 and 100000")
          const now = yield* ctx.now
          const ids: Array<string> = []
          for (let i = 0; i < count; i++) {
            const customer = ctx.state.createCustomer({}, now)
            yield* ctx.webhooks.emit("customer.created", customer)
            ids.push(customer.id)
          }
          return jsonReply({ ids })
        }
        case "POST /_emulator/rate_limits": {
          // `{"off": true}` lifts every limit; otherwise any of test_mode, live_v1_meter_events,
          // live_stream, live_other (the rest keep Stripe's values).
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          try {
            ctx.rateLimiter.set(rateLimitsFromJson(body.right))
          } catch (e) {
            return bad(e instanceof Error ? e.message : String(e))
          }
          return jsonReply({ rate_limits: ctx.rateLimiter.current() ?? null })
        }
        case "POST /_emulator/settings": {
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const b = body.right as { summary_delay_ms?: unknown; v1_concurrency_limit?: unknown; webhook_retry_delays_ms?: unknown }
          if (b.summary_delay_ms !== undefined) {
            if (typeof b.summary_delay_ms !== "number" || b.summary_delay_ms < 0) return bad("summary_delay_ms must be >= 0")
            ctx.summaryDelayMs = b.summary_delay_ms
          }
          if (b.v1_concurrency_limit !== undefined) {
            if (typeof b.v1_concurrency_limit !== "boolean") return bad("v1_concurrency_limit must be a boolean")
            ctx.v1ConcurrencyLimit = b.v1_concurrency_limit
          }
          if (b.webhook_retry_delays_ms !== undefined) {
            const d = b.webhook_retry_delays_ms
            if (!Array.isArray(d) || d.some((x) => typeof x !== "number" || x < 0)) {
              return bad("webhook_retry_delays_ms must be an array of non-negative numbers")
            }
            ctx.webhooks.setRetryDelays(d as Array<number>)
            ctx.eventDestination.setRetryDelays(d as Array<number>)
          }
          return jsonReply({ summary_delay_ms: ctx.summaryDelayMs, v1_concurrency_limit: ctx.v1ConcurrencyLimit })
        }
        case "POST /_emulator/meters": {
          // Meters with fields the product never sets itself, e.g. a pre-aggregated one:
          // {display_name, event_name, formula, event_time_window: "hour"|"day", customer_key?, value_key?}
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const b = body.right as Record<string, unknown>
          const now = yield* ctx.now
          const created = yield* Effect.either(
            attempt(() =>
              ctx.state.createMeter(
                {
                  display_name: b.display_name as string,
                  event_name: b.event_name as string,
                  default_aggregation: { formula: (b.formula ?? "sum") as "sum" },
                  ...(b.event_time_window !== undefined ? { event_time_window: b.event_time_window as "hour" } : {}),
                  ...(typeof b.customer_key === "string" ? { customer_mapping: { event_payload_key: b.customer_key } } : {}),
                  ...(typeof b.value_key === "string" ? { value_settings: { event_payload_key: b.value_key } } : {})
                },
                now
              )
            )
          )
          if (created._tag === "Left") return bad(created.left.message)
          return jsonReply(created.right)
        }
        case "POST /_emulator/keys/roll": {
          // Rolls the secret key: a new one is issued, the old one expires now or after
          // `expire_after_seconds` (https://docs.stripe.com/keys#rolling-keys). Answers the new key
          // (this control plane is the emulated Dashboard).
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const after = (body.right as { expire_after_seconds?: unknown }).expire_after_seconds
          if (after !== undefined && (typeof after !== "number" || after < 0)) return bad("expire_after_seconds must be >= 0")
          const fresh = yield* rollKeys(ctx, typeof after === "number" ? after * 1000 : 0)
          return jsonReply({ api_key: fresh })
        }
        case "POST /_emulator/event_destination": {
          const body = yield* Effect.either(readJson(request))
          if (body._tag === "Left") return bad("invalid JSON")
          const b = body.right as { url?: unknown; secret?: unknown }
          if (typeof b.url !== "string" || typeof b.secret !== "string") return bad("url and secret are required")
          ctx.eventDestination.setTarget({ url: b.url, secret: Redacted.make(b.secret) })
          return jsonReply({ ok: true })
        }
        case "GET /_emulator/webhooks/deliveries":
          return jsonReply({ deliveries: ctx.webhooks.log() })
        default:
          return jsonReply({ error: { type: "invalid_request_error", message: `unknown control route ${route}` } }, 404)
      }
    })
}

/**
 * Issues a new secret key (same mode) and expires every active one after `expireAfterMs`
 * (0 = now). Returns the new key.
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

export const releaseHeld = (ctx: EmulatorContext) =>
  Effect.gen(function* () {
    const all = ctx.held.splice(0, ctx.held.length)
    for (const h of all) yield* Deferred.succeed(h.deferred, undefined)
    return all.length
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

export { stripeId }

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
import { JsonNumber, stringifyJson } from "../domain/Json.js"

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
  readonly apiKey: Redacted.Redacted<string>
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
      settings: { dashboard: { display_name: "FlexPrice emulator", timezone: "Etc/UTC" } },
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
          const { limit, startingAfter, endingBefore } = listParams(query)
          const all = state.summaries(id, customer, start, end, grouping).map((b) => ({
            id: `mtrusg_${ctx.livemode ? "" : "test_"}${b.start}_${b.end}`,
            object: "billing.meter_event_summary",
            // the exact decimal, written as a bare JSON number like Stripe does
            aggregated_value: new JsonNumber(b.value),
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
          if (state.isDuplicate(r.identifier, now)) {
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
          // Stripe processes stream events asynchronously: invalid ones are reported later, not here.
          for (const f of failures) {
            state.recordStreamError({
              identifier: f.input.identifier,
              eventName: f.input.event_name,
              code: f.error.code ?? "invalid",
              message: f.error.message,
              atMs: now
            })
          }
          for (const r of accepted) {
            if (state.isDuplicate(r.identifier, now)) state.duplicatesIgnored++
            else state.commitMeterEvent(r)
          }
        })
        return jsonReply({})
      })
    )
  )
}

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

const storable = (status: number) => status < 500 && status !== 429 && status !== 401 && status !== 409

const bump = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1)

/** Builds the whole HTTP app (API + control plane) over an emulator context. */
export const makeApp = (ctx: EmulatorContext) => {
  const router = makeRouter(ctx)
  const control = makeControl(ctx)

  const api = (request: HttpServerRequest.HttpServerRequest, path: string, search: string, body: string) =>
    Effect.gen(function* () {
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

      const latency = ctx.faults.latencyMs(path)
      if (latency > 0) yield* Effect.sleep(latency)
      const decision = ctx.faults.decide(path, yield* ctx.now)
      switch (decision._tag) {
        case "drop": {
          bump(ctx.counters.byStatus, 0)
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
          return fail(
            new StripeEmulatorError({
              status: decision.status,
              type: "api_error",
              message: "An unknown error occurred (emulated).",
              headers: { "Stripe-Should-Retry": "true" }
            })
          )
        case "none":
          break
      }

      // Auth: the stream takes a session token, everything else the account's API key.
      const token = bearer(request.headers["authorization"])
      const apiKey = Redacted.value(ctx.apiKey)
      if (token === undefined || token === "") {
        return fail(
          authFailure(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            v2
          )
        )
      }
      if (path === STREAM_PATH) {
        if (token === apiKey) {
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
      } else if (token !== apiKey) {
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

      if (idempotencyKey !== null) ctx.idempotency.set(idempotencyKey, "in_flight")
      const info = RequestInfo.of({
        requestId,
        body,
        query: decodeForm(search),
        idempotencyKey
      })
      const response = yield* router.pipe(
        Effect.provideService(RequestInfo, info),
        Effect.catchTags({
          StripeEmulatorError: (e) => Effect.succeed(errorReply(e, requestId)),
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
      if (idempotencyKey !== null && storable(response.status) && response.body._tag === "Uint8Array") {
        ctx.idempotency.set(idempotencyKey, {
          fingerprint,
          status: response.status,
          body: response.body.body,
          headers: { "Request-Id": requestId }
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
    // The v1 rule "never two concurrent calls for the same customer+meter" is the client's to
    // keep; the emulator counts every overlap so tests can assert there were none.
    const pair = method === "POST" && path === "/v1/billing/meter_events" ? ctx.state.pairKey(decodeForm(body)) : undefined
    if (pair === undefined) return yield* api(request, path, search, body)
    const inFlight = ctx.v1InFlight.get(pair) ?? 0
    if (inFlight > 0) ctx.counters.v1Overlaps++
    ctx.v1InFlight.set(pair, inFlight + 1)
    return yield* api(request, path, search, body).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          const n = (ctx.v1InFlight.get(pair) ?? 1) - 1
          if (n <= 0) ctx.v1InFlight.delete(pair)
          else ctx.v1InFlight.set(pair, n)
        })
      )
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
        case "GET /_emulator/webhooks/deliveries":
          return jsonReply({ deliveries: ctx.webhooks.log() })
        default:
          return jsonReply({ error: { type: "invalid_request_error", message: `unknown control route ${route}` } }, 404)
      }
    })
}

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

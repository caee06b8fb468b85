/**
 * Stripe's meter event routes: v1 `POST /v1/billing/meter_events` and the v2 session + stream
 * (https://docs.stripe.com/api/billing/meter-event, https://docs.stripe.com/api/v2/billing-meter-stream).
 */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { type EmulatorContext, RequestInfo } from "../context.js"
import { invalidRequest, StripeEmulatorError } from "../errors.js"
import { decodeForm, obj, str } from "../form.js"
import { attempt, jsonReply, parseIntParam } from "../http.js"
import { MAX_STREAM_EVENTS, type MeterEventInput, type MeterEventRecord, parseRfc3339 } from "../state.js"

export const meterEventRoutes = (ctx: EmulatorContext) => {
  const { state } = ctx
  const form = Effect.map(RequestInfo, (i) => decodeForm(i.body))

  return HttpRouter.empty.pipe(
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

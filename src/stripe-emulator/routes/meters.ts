/** Stripe's billing meter routes and their event summaries (https://docs.stripe.com/api/billing/meter). */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { type EmulatorContext, RequestInfo } from "../context.js"
import { invalidParam, missingParam } from "../errors.js"
import { decodeForm, str } from "../form.js"
import { attempt, jsonReply, list, listParams, parseIntParam } from "../http.js"

export const meterRoutes = (ctx: EmulatorContext) => {
  const { state } = ctx
  const form = Effect.map(RequestInfo, (i) => decodeForm(i.body))
  const pathId = Effect.map(HttpRouter.params, (p) => p.id ?? "")

  return HttpRouter.empty.pipe(
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
        const id = yield* pathId
        return jsonReply(yield* attempt(() => state.retrieveMeter(id)))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters/:id",
      Effect.gen(function* () {
        const id = yield* pathId
        const body = yield* form
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.updateMeter(id, body, now)))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters/:id/deactivate",
      Effect.gen(function* () {
        const id = yield* pathId
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.setMeterStatus(id, "inactive", now)))
      })
    ),
    HttpRouter.post(
      "/v1/billing/meters/:id/reactivate",
      Effect.gen(function* () {
        const id = yield* pathId
        const now = yield* ctx.now
        return jsonReply(yield* attempt(() => state.setMeterStatus(id, "active", now)))
      })
    ),
    HttpRouter.get(
      "/v1/billing/meters/:id/event_summaries",
      Effect.gen(function* () {
        const id = yield* pathId
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
    )
  )
}

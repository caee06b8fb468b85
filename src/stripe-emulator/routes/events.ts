/** Stripe's event routes: v1 snapshot events (webhooks) and v2 thin events (event destinations). */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { type EmulatorContext, RequestInfo } from "../context.js"
import { invalidRequest, StripeEmulatorError } from "../errors.js"
import { str } from "../form.js"
import { attempt, jsonReply, list, listParams } from "../http.js"

export const eventRoutes = (ctx: EmulatorContext) => {
  const { webhooks } = ctx
  const pathId = Effect.map(HttpRouter.params, (p) => p.id ?? "")

  return HttpRouter.empty.pipe(
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
        const id = yield* pathId
        const e = webhooks.event(id)
        if (!e) return yield* Effect.fail(invalidRequest(`No such event: '${id}'`, { code: "resource_missing", status: 404 }))
        return jsonReply(e)
      })
    ),
    HttpRouter.get(
      "/v2/core/events/:id",
      Effect.gen(function* () {
        const id = yield* pathId
        const e = ctx.eventDestination.v2Event(id)
        if (!e) {
          return yield* Effect.fail(
            new StripeEmulatorError({ status: 404, type: "not_found", code: "not_found", message: `No such event: '${id}'` })
          )
        }
        return jsonReply(e)
      })
    )
  )
}

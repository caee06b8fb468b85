/** Stripe's account and customer routes (https://docs.stripe.com/api/customers). */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { type EmulatorContext, RequestInfo } from "../context.js"
import { decodeForm, str } from "../form.js"
import { attempt, jsonReply, list, listParams } from "../http.js"

export const customerRoutes = (ctx: EmulatorContext) => {
  const { state, webhooks } = ctx
  const form = Effect.map(RequestInfo, (i) => decodeForm(i.body))
  const pathId = Effect.map(HttpRouter.params, (p) => p.id ?? "")

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
        const id = yield* pathId
        return jsonReply(yield* attempt(() => state.retrieveCustomer(id)))
      })
    ),
    HttpRouter.post(
      "/v1/customers/:id",
      Effect.gen(function* () {
        const id = yield* pathId
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
        const id = yield* pathId
        const info = yield* RequestInfo
        const { deleted, customer } = yield* attempt(() => state.deleteCustomer(id))
        yield* webhooks.emit("customer.deleted", customer, { requestId: info.requestId, idempotencyKey: info.idempotencyKey })
        return jsonReply(deleted)
      })
    )
  )
}

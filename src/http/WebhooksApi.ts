/**
 * Stripe webhook endpoints. No API key: deliveries authenticate with their Stripe signature,
 * verified on the raw body (handled raw, so nothing re-serialises it).
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"

export const WebhookAck = Schema.Struct({
  received: Schema.Literal(true),
  event_id: Schema.String,
  status: Schema.Literal("processed", "duplicate", "unmapped", "conflict", "ignored")
})

const tenantParam = HttpApiSchema.param("tenant_id", Schema.String)
const environmentParam = HttpApiSchema.param("environment_id", Schema.String)

export class WebhooksGroup extends HttpApiGroup.make("webhooks")
  .add(
    HttpApiEndpoint.post("stripeForEnvironment")`/webhooks/stripe/${tenantParam}/${environmentParam}`
      .addSuccess(WebhookAck)
      .annotate(OpenApi.Description, "Stripe events for one tenant environment, signed with that environment's webhook secret.")
  )
  .add(
    HttpApiEndpoint.post("stripeGlobal", "/webhooks/stripe")
      .addSuccess(WebhookAck)
      .annotate(
        OpenApi.Description,
        "Stripe events signed with STRIPE_WEBHOOK_SECRET; the tenant comes from customer metadata flexprice_tenant_id/flexprice_environment_id, else from the connected Stripe account."
      )
  ) {}

/**
 * Stripe webhook endpoints. No API key: deliveries authenticate with their Stripe signature,
 * verified on the raw body (handled raw, so nothing re-serialises it).
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { ForbiddenResponse } from "./ErrorContract.js"

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
    HttpApiEndpoint.post("stripeEventDestination")`/webhooks/stripe-events/${tenantParam}/${environmentParam}`
      .addSuccess(WebhookAck)
      .annotate(
        OpenApi.Description,
        "Stripe v2 event destination (thin events) for one tenant environment, signed with its event_destination_secret. Handles v1.billing.meter.error_report_triggered / no_meter_found: the full event is fetched from Stripe and the batches it names are marked failed with Stripe's error code. An event whose context is a connected account must name the account this environment is connected to (else 400 tenant_account_mismatch)."
      )
  )
  .add(
    HttpApiEndpoint.post("stripeGlobal", "/webhooks/stripe")
      .addSuccess(WebhookAck)
      .annotate(
        OpenApi.Description,
        "Stripe events of connected accounts signed with STRIPE_WEBHOOK_SECRET; the tenant is the environment connected to event.account (recorded by POST /v1/stripe/config/test). Customer metadata flexprice_tenant_id/flexprice_environment_id may only choose among the environments connected to that account (else 400 tenant_account_mismatch); an event without account is refused (tenant_not_found)."
      )
  )
  .addError(ForbiddenResponse) {}

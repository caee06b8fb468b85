/**
 * Tenant Stripe configuration, meter mappings and the webhook event log (x-api-key).
 * Secrets are accepted as `Redacted` so no decoded value prints them; responses never carry them.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "./Security.js"

export const StripeConfigUpdate = Schema.Struct({
  api_key: Schema.optional(Schema.Redacted(Schema.String)),
  /** null clears the stored secret. */
  webhook_secret: Schema.optional(Schema.NullOr(Schema.Redacted(Schema.String))),
  /** Signing secret of the v2 event destination (thin events, e.g. meter error reports); null clears it. */
  event_destination_secret: Schema.optional(Schema.NullOr(Schema.Redacted(Schema.String))),
  sync_enabled: Schema.optional(Schema.Boolean),
  aggregation_window_minutes: Schema.optional(Schema.Number),
  grace_period_minutes: Schema.optional(Schema.Number),
  transport: Schema.optional(Schema.Literal("stream", "v1"))
})

export const StripeConfigView = Schema.Struct({
  tenant_id: Schema.String,
  environment_id: Schema.String,
  api_key: Schema.String.annotations({ description: "masked, e.g. sk_test_…4242" }),
  livemode: Schema.Boolean,
  stripe_account_id: Schema.NullOr(Schema.String),
  webhook_secret_set: Schema.Boolean,
  webhook_url: Schema.String,
  event_destination_secret_set: Schema.Boolean,
  event_destination_url: Schema.String.annotations({ description: "where Stripe's v2 event destination (thin events) delivers" }),
  sync_enabled: Schema.Boolean,
  aggregation_window_minutes: Schema.Number,
  grace_period_minutes: Schema.Number,
  transport: Schema.Literal("stream", "v1"),
  key_version: Schema.String,
  created_at: Schema.String,
  updated_at: Schema.String
})

export const ConnectionTest = Schema.Struct({
  ok: Schema.Literal(true),
  account_id: Schema.String,
  livemode: Schema.Boolean,
  display_name: Schema.NullOr(Schema.String)
})

export const MeterMappingUpdate = Schema.Struct({
  provider_meter_id: Schema.String,
  sync_enabled: Schema.optional(Schema.Boolean),
  whole_units: Schema.optional(Schema.Boolean)
})

export const MeterMappingView = Schema.Struct({
  meter_id: Schema.String,
  provider_meter_id: Schema.String,
  stripe_event_name: Schema.String,
  customer_payload_key: Schema.String,
  value_payload_key: Schema.String,
  formula: Schema.Literal("sum", "count", "last"),
  whole_units: Schema.Boolean,
  sync_enabled: Schema.Boolean,
  created_at: Schema.String,
  updated_at: Schema.String
})

export const WebhookEventView = Schema.Struct({
  id: Schema.String,
  // the delivered event's id, not the ledger column of that name dropped in migrations/0010
  stripe_event_id: Schema.String.annotations({ description: "the Stripe event's id (evt_…), the key deliveries are deduplicated on" }),
  type: Schema.String,
  status: Schema.String,
  stripe_object_id: Schema.NullOr(Schema.String),
  error: Schema.NullOr(Schema.String),
  details: Schema.Unknown,
  received_at: Schema.String,
  processed_at: Schema.NullOr(Schema.String)
})

const meterIdParam = HttpApiSchema.param("meter_id", Schema.String)

export class StripeConfigGroup extends HttpApiGroup.make("stripeConfig")
  .add(HttpApiEndpoint.put("putConfig", "/v1/stripe/config").setPayload(StripeConfigUpdate).addSuccess(StripeConfigView))
  .add(HttpApiEndpoint.get("getConfig", "/v1/stripe/config").addSuccess(StripeConfigView))
  .add(HttpApiEndpoint.post("testConfig", "/v1/stripe/config/test").addSuccess(ConnectionTest))
  .add(
    HttpApiEndpoint.put("putMeterMapping")`/v1/stripe/meter-mappings/${meterIdParam}`.setPayload(MeterMappingUpdate).addSuccess(MeterMappingView)
  )
  .add(HttpApiEndpoint.get("listMeterMappings", "/v1/stripe/meter-mappings").addSuccess(Schema.Struct({ mappings: Schema.Array(MeterMappingView) })))
  .add(HttpApiEndpoint.get("getMeterMapping")`/v1/stripe/meter-mappings/${meterIdParam}`.addSuccess(MeterMappingView))
  .add(
    HttpApiEndpoint.del("deleteMeterMapping")`/v1/stripe/meter-mappings/${meterIdParam}`.addSuccess(
      Schema.Struct({ meter_id: Schema.String, deleted: Schema.Boolean })
    )
  )
  .add(
    HttpApiEndpoint.get("listWebhookEvents", "/v1/stripe/webhook-events")
      .setUrlParams(
        Schema.Struct({
          status: Schema.optional(Schema.Literal("received", "processed", "duplicate", "unmapped", "conflict", "failed", "ignored")),
          limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000)))
        })
      )
      .addSuccess(Schema.Struct({ events: Schema.Array(WebhookEventView) }))
  )
  .middleware(Authentication) {}

/**
 * Records the requirements name beyond configuration (issue #18 item 6): disconnecting Stripe
 * (`DELETE /v1/stripe/config`), a customer's Stripe mapping (read, delete) and the audit log
 * (read, filtered, cursor-paged). Every route is scoped to the caller's tenant environment.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { AuditCursor } from "./Cursors.js"
import { Instant } from "./Params.js"
import { Authentication } from "./Security.js"

export const Disconnected = Schema.Struct({
  disconnected: Schema.Literal(true),
  stripe_account_id: Schema.NullOr(Schema.String),
  unsynced_batches: Schema.Int.annotations({
    description: "pending, sending and failed batches kept in the ledger; they are sent if Stripe is connected again within Stripe's 35-day horizon"
  })
})

export const CustomerMappingView = Schema.Struct({
  id: Schema.String,
  customer_id: Schema.String,
  provider: Schema.Literal("stripe"),
  provider_customer_id: Schema.String,
  status: Schema.Literal("active", "deleted"),
  source: Schema.String,
  migration_id: Schema.NullOr(Schema.String),
  metadata: Schema.Unknown,
  created_at: Schema.String,
  updated_at: Schema.String
})

export const AuditEntryView = Schema.Struct({
  id: Schema.String,
  action: Schema.String,
  actor: Schema.String,
  target: Schema.NullOr(Schema.String),
  source_ip: Schema.NullOr(Schema.String),
  details: Schema.Unknown,
  created_at: Schema.String
})

const customerIdParam = HttpApiSchema.param("customer_id", Schema.String)

export class AdminGroup extends HttpApiGroup.make("admin")
  .add(
    HttpApiEndpoint.del("deleteConfig", "/v1/stripe/config")
      .addSuccess(Disconnected)
      .annotate(
        OpenApi.Description,
        "Disconnects Stripe: the key and webhook secret are deleted and sync stops; the ledger, mappings and audit log are kept. Waits for a running sync of this environment to finish. Audited."
      )
  )
  .add(HttpApiEndpoint.get("getCustomerMapping")`/v1/customers/${customerIdParam}/stripe-mapping`.addSuccess(CustomerMappingView))
  .add(
    HttpApiEndpoint.del("deleteCustomerMapping")`/v1/customers/${customerIdParam}/stripe-mapping`
      .addSuccess(CustomerMappingView)
      .annotate(
        OpenApi.Description,
        "Marks the customer's Stripe mapping deleted (as Stripe's customer.deleted does): its usage is held as skipped/no_mapping and sent if it is mapped again within 35 days. Audited."
      )
  )
  .add(
    HttpApiEndpoint.get("listAuditLog", "/v1/audit-log")
      .setUrlParams(
        Schema.Struct({
          action: Schema.optional(Schema.String.annotations({ description: "e.g. config.update, sync.batches_retry" })),
          from: Schema.optional(Instant.annotations({ description: "RFC 3339, inclusive" })),
          to: Schema.optional(Instant.annotations({ description: "RFC 3339, exclusive" })),
          limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000))),
          cursor: Schema.optional(AuditCursor)
        })
      )
      .addSuccess(Schema.Struct({ entries: Schema.Array(AuditEntryView), next_cursor: Schema.NullOr(AuditCursor) }))
  )
  .middleware(Authentication) {}

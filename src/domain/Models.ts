/**
 * Wire and domain schemas of the core model (customers, meters, events). Decoded once at the
 * HTTP edge; inside, code works with the decoded types.
 */
import { Schema } from "effect"
import { CustomerId, EnvironmentId, MeterId, TenantId } from "./Ids.js"

const Metadata = Schema.Record({ key: Schema.String, value: Schema.String })

const ExternalId = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(255),
  Schema.annotations({ description: "Your own id for the customer (unique per tenant environment)" })
)

export class Customer extends Schema.Class<Customer>("Customer")({
  id: CustomerId,
  external_id: Schema.String,
  name: Schema.NullOr(Schema.String),
  email: Schema.NullOr(Schema.String),
  metadata: Metadata,
  created_at: Schema.String,
  updated_at: Schema.String
}) {}

export const CustomerCreate = Schema.Struct({
  external_id: ExternalId,
  name: Schema.optional(Schema.NullOr(Schema.String.pipe(Schema.maxLength(500)))),
  email: Schema.optional(Schema.NullOr(Schema.String.pipe(Schema.maxLength(500)))),
  metadata: Schema.optional(Metadata)
})
export type CustomerCreate = typeof CustomerCreate.Type

export const CustomerUpdate = Schema.Struct({
  name: Schema.optional(Schema.NullOr(Schema.String.pipe(Schema.maxLength(500)))),
  email: Schema.optional(Schema.NullOr(Schema.String.pipe(Schema.maxLength(500)))),
  metadata: Schema.optional(Metadata)
})
export type CustomerUpdate = typeof CustomerUpdate.Type

export const AggregationType = Schema.Literal("COUNT", "SUM", "MAX", "LATEST")
export type AggregationType = typeof AggregationType.Type

export const MeterFilter = Schema.Struct({
  key: Schema.String.pipe(Schema.minLength(1)),
  values: Schema.Array(Schema.String).pipe(Schema.minItems(1))
})
export type MeterFilter = typeof MeterFilter.Type

export const Aggregation = Schema.Struct({
  type: AggregationType,
  field: Schema.optional(Schema.NullOr(Schema.String.pipe(Schema.minLength(1))))
}).pipe(
  Schema.filter((a) => a.type === "COUNT" || (a.field != null && a.field !== "") || `aggregation ${a.type} needs a field`)
)

export class Meter extends Schema.Class<Meter>("Meter")({
  id: MeterId,
  name: Schema.String,
  event_name: Schema.String,
  aggregation: Schema.Struct({ type: AggregationType, field: Schema.NullOr(Schema.String) }),
  filters: Schema.Array(MeterFilter),
  created_at: Schema.String
}) {}

export const MeterCreate = Schema.Struct({
  name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  event_name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  aggregation: Aggregation,
  filters: Schema.optional(Schema.Array(MeterFilter))
})
export type MeterCreate = typeof MeterCreate.Type

/** Numbers inside properties may be JSON numbers or numeric strings; documented as free-form. */
export const EventInput = Schema.Struct({
  event_id: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255))),
  event_name: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  external_customer_id: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  timestamp: Schema.optional(Schema.String.annotations({ description: "RFC 3339; default now" })),
  properties: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type EventInput = typeof EventInput.Type

export const BulkEventsInput = Schema.Struct({ events: Schema.Array(EventInput) })

export const IngestRejection = Schema.Struct({
  index: Schema.Int,
  event_id: Schema.NullOr(Schema.String),
  code: Schema.String,
  reason: Schema.String
})
export type IngestRejection = typeof IngestRejection.Type

export const IngestResult = Schema.Struct({
  accepted: Schema.Int,
  duplicates: Schema.Int,
  rejected: Schema.Array(IngestRejection),
  event_ids: Schema.Array(Schema.String)
})
export type IngestResult = typeof IngestResult.Type

export const EventView = Schema.Struct({
  event_id: Schema.String,
  event_name: Schema.String,
  external_customer_id: Schema.String,
  customer_id: Schema.NullOr(Schema.String),
  timestamp: Schema.String,
  ingested_at: Schema.String,
  properties: Schema.Unknown,
  status: Schema.Literal("processed", "pending", "error"),
  error: Schema.NullOr(Schema.String)
})

export const EventList = Schema.Struct({ events: Schema.Array(EventView), next_cursor: Schema.NullOr(Schema.String) })

export const TenantCreated = Schema.Struct({ tenant_id: TenantId, environment_id: EnvironmentId, api_key: Schema.String })

/** Largest bulk request. */
export const MAX_BULK_EVENTS = 1000

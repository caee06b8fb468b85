/**
 * HttpApi groups of the core model: health, customers, meters, events. Schemas define requests,
 * responses and errors; the OpenAPI document is generated from them.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"
import {
  BulkEventsInput,
  Customer,
  CustomerCreate,
  CustomerUpdate,
  EventInput,
  EventList,
  IngestResult,
  Meter,
  MeterCreate
} from "../domain/Models.js"
import { CustomerCursor, EventCursor } from "./Cursors.js"
import { Instant } from "./Params.js"
import { Authentication } from "./Security.js"

const idParam = HttpApiSchema.param("id", Schema.String)

export const Health = Schema.Struct({ status: Schema.Literal("ok") })
export const Readiness = Schema.Struct({
  status: Schema.Literal("ready", "not_ready"),
  checks: Schema.Record({ key: Schema.String, value: Schema.String })
})

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("healthz", "/healthz").addSuccess(Health))
  // not ready: 503 ServiceUnavailable `not_ready`, the message naming each failed dependency,
  // details {status, checks} as in the success body
  .add(HttpApiEndpoint.get("readyz", "/readyz").addSuccess(Readiness))
  {}

const Limit = Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000)))

export class CustomersGroup extends HttpApiGroup.make("customers")
  .add(HttpApiEndpoint.post("create", "/v1/customers").setPayload(CustomerCreate).addSuccess(Customer, { status: 201 }))
  .add(HttpApiEndpoint.get("get")`/v1/customers/${idParam}`.addSuccess(Customer))
  .add(
    HttpApiEndpoint.get("list", "/v1/customers")
      .setUrlParams(Schema.Struct({ external_id: Schema.optional(Schema.String), limit: Limit, cursor: Schema.optional(CustomerCursor) }))
      .addSuccess(Schema.Struct({ customers: Schema.Array(Customer), next_cursor: Schema.NullOr(CustomerCursor) }))
  )
  .add(HttpApiEndpoint.put("update")`/v1/customers/${idParam}`.setPayload(CustomerUpdate).addSuccess(Customer))
  .add(HttpApiEndpoint.del("delete")`/v1/customers/${idParam}`.addSuccess(Schema.Struct({ id: Schema.String, deleted: Schema.Boolean })))
  .middleware(Authentication) {}

export class MetersGroup extends HttpApiGroup.make("meters")
  .add(HttpApiEndpoint.post("create", "/v1/meters").setPayload(MeterCreate).addSuccess(Meter, { status: 201 }))
  .add(HttpApiEndpoint.get("list", "/v1/meters").addSuccess(Schema.Struct({ meters: Schema.Array(Meter) })))
  .add(HttpApiEndpoint.get("get")`/v1/meters/${idParam}`.addSuccess(Meter))
  .add(HttpApiEndpoint.del("delete")`/v1/meters/${idParam}`.addSuccess(Schema.Struct({ id: Schema.String, deleted: Schema.Boolean })))
  .middleware(Authentication) {}

export class EventsGroup extends HttpApiGroup.make("events")
  .add(
    HttpApiEndpoint.post("ingest", "/v1/events")
      .setPayload(EventInput)
      .addSuccess(IngestResult, { status: 202 })
  )
  .add(
    HttpApiEndpoint.post("bulk", "/v1/events/bulk")
      .setPayload(BulkEventsInput)
      .addSuccess(IngestResult, { status: 202 })
  )
  .add(
    HttpApiEndpoint.get("list", "/v1/events")
      .setUrlParams(
        Schema.Struct({
          external_customer_id: Schema.optional(Schema.String),
          event_name: Schema.optional(Schema.String),
          from: Schema.optional(Instant.annotations({ description: "RFC 3339: events at or after" })),
          to: Schema.optional(Instant.annotations({ description: "RFC 3339: events before" })),
          limit: Limit,
          cursor: Schema.optional(EventCursor)
        })
      )
      .addSuccess(EventList)
  )
  .middleware(Authentication) {}

/** Handlers of the core groups: they translate HTTP to service calls and nothing more. */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Option, Schema } from "effect"
import { CustomerService } from "../customers/CustomerService.js"
import { InvalidInput, NotFound, PayloadTooLarge, ServiceUnavailable } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { isJsonObject, JsonSyntaxError, parseJson, stringifyJson } from "../domain/Json.js"
import { Customer, MAX_BULK_EVENTS, Meter } from "../domain/Models.js"
import { EventIngestor } from "../events/EventIngestor.js"
import { EventStore } from "../events/EventStore.js"
import { CustomerRepo, type CustomerRow } from "../repositories/CustomerRepo.js"
import { MeterRepo, type MeterRow } from "../repositories/MeterRepo.js"
import { PgClient } from "@effect/sql-pg"
import { HttpConfig } from "../config/AppConfig.js"
import { FlexPriceApi } from "./Api.js"
import { orUnavailable } from "./Errors.js"
import { toDateOrUndefined } from "./Params.js"
import { EventCursor } from "./Cursors.js"

const encodeEventCursor = Schema.encodeSync(EventCursor)

export const customerView = (c: CustomerRow) =>
  Customer.make({
    id: c.id,
    external_id: c.externalId,
    name: c.name,
    email: c.email,
    metadata: c.metadata ?? {},
    created_at: new Date(c.createdAt).toISOString(),
    updated_at: new Date(c.updatedAt).toISOString()
  })

export const meterView = (m: MeterRow) =>
  Meter.make({
    id: m.id,
    name: m.name,
    event_name: m.eventName,
    aggregation: { type: m.aggregationType, field: m.aggregationField },
    filters: m.filters ?? [],
    created_at: new Date(m.createdAt).toISOString()
  })

/** "ok", "timeout" (no answer within 2 s) or "unreachable" (an error, logged with its cause). */
const probe = <E>(check: Effect.Effect<unknown, E>) =>
  check.pipe(
    Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "timeout" as const }),
    Effect.as("ok" as const),
    Effect.catchAll((e) =>
      e === "timeout" ? Effect.succeed("timeout" as const) : Effect.as(Effect.logWarning("readiness check failed", e), "unreachable" as const)
    )
  )

export const HealthLive = HttpApiBuilder.group(FlexPriceApi, "health", (handlers) =>
  Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const store = yield* EventStore
    return handlers
      .handle("healthz", () => Effect.succeed({ status: "ok" as const }))
      .handle("readyz", () =>
        Effect.gen(function* () {
          const db = yield* probe(sql`SELECT 1`)
          const events = yield* probe(store.ping())
          const checks = { database: db, event_store: events, event_store_backend: store.backend }
          const failed = Object.entries({ database: db, event_store: events }).filter(([, v]) => v !== "ok")
          // the envelope names each failed dependency and how it failed; causes (hosts, users) stay in the log
          if (failed.length > 0)
            return yield* new ServiceUnavailable({
              code: "not_ready",
              message: `not ready: ${failed.map(([k, v]) => `${k} ${v}`).join(", ")}`,
              details: { status: "not_ready", checks }
            })
          return { status: "ready" as const, checks }
        })
      )
  })
)

export const CustomersLive = HttpApiBuilder.group(FlexPriceApi, "customers", (handlers) =>
  Effect.gen(function* () {
    const service = yield* CustomerService
    const repo = yield* CustomerRepo
    const mustFind = (id: string) =>
      Effect.flatMap(repo.findById(id), Option.match({ onNone: () => Effect.fail(NotFound.of("customer", id)), onSome: Effect.succeed }))
    return handlers
      .handle("create", ({ payload }) =>
        service
          .create({ externalId: payload.external_id, name: payload.name, email: payload.email, metadata: payload.metadata })
          .pipe(Effect.map(customerView), orUnavailable)
      )
      .handle("get", ({ path }) => mustFind(path.id).pipe(Effect.map(customerView), orUnavailable))
      .handle("list", ({ urlParams }) =>
        Effect.gen(function* () {
          if (urlParams.external_id !== undefined) {
            const c = yield* repo.findByExternalId(urlParams.external_id)
            return { customers: Option.toArray(c).map(customerView), next_cursor: null }
          }
          const limit = urlParams.limit ?? 100
          const rows = yield* repo.list({ limit: limit + 1, after: urlParams.cursor })
          const page = rows.slice(0, limit)
          return { customers: page.map(customerView), next_cursor: rows.length > limit ? (page[page.length - 1]?.id ?? null) : null }
        }).pipe(orUnavailable)
      )
      .handle("update", ({ path, payload }) =>
        repo.update(path.id, payload).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(NotFound.of("customer", path.id)), onSome: Effect.succeed })),
          Effect.map(customerView),
          orUnavailable
        )
      )
      .handle("delete", ({ path }) =>
        repo.remove(path.id).pipe(
          Effect.flatMap((deleted) => (deleted ? Effect.succeed({ id: path.id, deleted: true }) : Effect.fail(NotFound.of("customer", path.id)))),
          orUnavailable
        )
      )
  })
)

export const MetersLive = HttpApiBuilder.group(FlexPriceApi, "meters", (handlers) =>
  Effect.gen(function* () {
    const repo = yield* MeterRepo
    return handlers
      .handle("create", ({ payload }) => repo.create(payload).pipe(Effect.map(meterView), orUnavailable))
      .handle("list", () => repo.list.pipe(Effect.map((ms) => ({ meters: ms.map(meterView) })), orUnavailable))
      .handle("get", ({ path }) =>
        repo.findById(path.id).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(NotFound.of("meter", path.id)), onSome: Effect.succeed })),
          Effect.map(meterView),
          orUnavailable
        )
      )
      .handle("delete", ({ path }) =>
        repo.remove(path.id).pipe(
          Effect.flatMap((deleted) => (deleted ? Effect.succeed({ id: path.id, deleted: true }) : Effect.fail(NotFound.of("meter", path.id)))),
          orUnavailable
        )
      )
  })
)

/**
 * Event bodies are read raw and parsed with `parseJson`, which keeps numbers as written
 * (`0.1` stays exactly 0.1); the declared payload schemas document the shape.
 */
const readJsonBody = (request: HttpServerRequest.HttpServerRequest, maxBytes: number) =>
  Effect.gen(function* () {
    const declared = Number(request.headers["content-length"] ?? "0")
    if (declared > maxBytes)
      return yield* new PayloadTooLarge({ code: "payload_too_large", message: `request body exceeds ${maxBytes} bytes`, details: { max_bytes: maxBytes } })
    const text = yield* request.text.pipe(
      Effect.catchAll(() =>
        Effect.fail(new PayloadTooLarge({ code: "payload_too_large", message: `request body exceeds ${maxBytes} bytes`, details: { max_bytes: maxBytes } }))
      )
    )
    if (text.length > maxBytes)
      return yield* new PayloadTooLarge({ code: "payload_too_large", message: `request body exceeds ${maxBytes} bytes`, details: { max_bytes: maxBytes } })
    return yield* Effect.try({
      try: () => parseJson(text),
      catch: (e) => InvalidInput.of("malformed_json", e instanceof JsonSyntaxError ? e.message : "invalid JSON")
    })
  })

export const EventsLive = HttpApiBuilder.group(FlexPriceApi, "events", (handlers) =>
  Effect.gen(function* () {
    const ingestor = yield* EventIngestor
    const store = yield* EventStore
    const { maxBodyBytes } = yield* HttpConfig
    const respond = (result: unknown) => HttpServerResponse.unsafeJson(result, { status: 202 })
    return handlers
      .handleRaw("ingest", ({ request }) =>
        Effect.gen(function* () {
          const body = yield* readJsonBody(request, maxBodyBytes)
          const result = yield* ingestor.ingest([body])
          const rejection = result.rejected[0]
          if (rejection) return yield* InvalidInput.of(rejection.code, rejection.reason, { event_id: rejection.event_id })
          return respond(result)
        }).pipe(orUnavailable)
      )
      .handleRaw("bulk", ({ request }) =>
        Effect.gen(function* () {
          const body = yield* readJsonBody(request, maxBodyBytes)
          const events = isJsonObject(body) ? body["events"] : undefined
          if (!Array.isArray(events)) return yield* InvalidInput.of("invalid_request", "body must be {\"events\": [...]}")
          if (events.length > MAX_BULK_EVENTS)
            return yield* InvalidInput.of("too_many_events", `a bulk request holds at most ${MAX_BULK_EVENTS} events (got ${events.length})`, {
              limit: MAX_BULK_EVENTS
            })
          return respond(yield* ingestor.ingest(events))
        }).pipe(orUnavailable)
      )
      // Raw, so properties are written with `stringifyJson`: numbers exactly as they were
      // ingested (99999999999999999999999.123456789, not 1e+23), as `parseJson` read them.
      .handleRaw("list", ({ urlParams }) =>
        Effect.gen(function* () {
          const scope = yield* CurrentTenant
          const from = toDateOrUndefined(urlParams.from)
          const to = toDateOrUndefined(urlParams.to)
          const page = yield* store.listEvents({
            scope,
            externalCustomerId: urlParams.external_customer_id,
            eventName: urlParams.event_name,
            from,
            to,
            limit: urlParams.limit ?? 100,
            cursor: urlParams.cursor
          })
          const body = {
            events: page.events.map((e) => ({
              event_id: e.eventId,
              event_name: e.eventName,
              external_customer_id: e.externalCustomerId,
              customer_id: e.customerId,
              timestamp: e.timestamp.toISOString(),
              ingested_at: e.ingestedAt.toISOString(),
              properties: parseJson(e.propertiesJson, Number.MAX_SAFE_INTEGER),
              status: e.status,
              error: e.error
            })),
            next_cursor: page.nextCursor === null ? null : encodeEventCursor(page.nextCursor)
          }
          return HttpServerResponse.text(stringifyJson(body), { contentType: "application/json" })
        }).pipe(orUnavailable)
      )
  })
)

export const CoreHttpLive = Layer.mergeAll(HealthLive, CustomersLive, MetersLive, EventsLive)

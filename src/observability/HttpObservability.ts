/**
 * HTTP server middleware: request ids (accepted from `X-Request-Id` when well formed, else
 * generated), a `request_id` log annotation and span attribute, and the `flexprice_http_*`
 * metrics labelled by route template (ids collapsed to `:id`, so cardinality stays bounded).
 *
 * Use inside the server span that @effect/platform creates for every request:
 *   HttpApiBuilder.serve((app) => observeHttp(HttpMiddleware.logger(errorEnvelope(app))))
 */
import { HttpApp, HttpMiddleware, HttpServerError, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Exit, Metric, MetricLabel, Option } from "effect"
import { randomToken } from "../domain/Ids.js"
import * as Metrics from "./Metrics.js"

export const REQUEST_ID_HEADER = "x-request-id"
const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

const PREFIXED_ID = /^[a-z]{2,5}_(?=[0-9A-Za-z]*\d)[0-9A-Za-z]{8,}$/

/** `/v1/customers/cust_8f3k…/usage` → `/v1/customers/:id/usage`. */
export const routeTemplate = (pathname: string): string =>
  pathname
    .split("/")
    .map((seg) =>
      seg === "" ? seg
      : PREFIXED_ID.test(seg) || /^\d+$/.test(seg) || /^[0-9a-f-]{16,}$/i.test(seg) || seg.length > 32 ? ":id"
      : seg
    )
    .join("/") || "/"

export const observeHttp = HttpMiddleware.make((app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const incoming = request.headers[REQUEST_ID_HEADER]
    const requestId = incoming !== undefined && VALID_REQUEST_ID.test(incoming) ? incoming : `req_${randomToken(20)}`
    const route = routeTemplate(Option.match(HttpServerRequest.toURL(request), { onNone: () => "/", onSome: (u) => u.pathname }))
    const started = yield* Effect.clockWith((c) => c.currentTimeMillis)
    yield* Effect.annotateCurrentSpan({ "http.request_id": requestId, "http.route": route })
    // A pre-response handler, not Effect.map: routers may answer before the middleware sees the response.
    yield* HttpApp.appendPreResponseHandler((_req, res) => Effect.succeed(HttpServerResponse.setHeader(res, REQUEST_ID_HEADER, requestId)))
    return yield* app.pipe(
      Effect.annotateLogs("request_id", requestId),
      Effect.onExit((exit) =>
        Effect.gen(function*() {
          const ended = yield* Effect.clockWith((c) => c.currentTimeMillis)
          // Failures not yet turned into responses get the status the server will answer with.
          const status = Exit.isSuccess(exit)
            ? exit.value.status
            : yield* HttpServerError.causeResponse(exit.cause).pipe(Effect.map(([res]) => res.status))
          const tags = { method: request.method, route, status: Metrics.statusClass(status) }
          yield* Metric.increment(Metric.taggedWithLabels(Metrics.httpRequestsTotal, labels(tags)))
          yield* Metric.update(
            Metric.taggedWithLabels(Metrics.httpRequestDurationSeconds, labels({ method: request.method, route })),
            (ended - started) / 1000
          )
        })
      )
    )
  })
)

const labels = (r: Record<string, string>) => Object.entries(r).map(([k, v]) => MetricLabel.make(k, v))

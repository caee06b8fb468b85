/**
 * HTTP server middleware: request ids (accepted from `X-Request-Id` when well formed, else
 * generated), a `request_id` log annotation and span attribute, and the `flexprice_http_*`
 * metrics labelled by the route template the router matched (`/v1/customers/:id`; the router
 * records it on the server span as `http.route`), or `unmatched`: the label set is the route
 * table, whatever paths clients send.
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

/**
 * The `route` label of a request no route matched (404s, probes, scans). Labelling by the raw
 * path let any client grow the metric set without bound, one series per path it invented.
 */
export const UNMATCHED_ROUTE = "unmatched"

export const observeHttp = HttpMiddleware.make((app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const incoming = request.headers[REQUEST_ID_HEADER]
    const requestId = incoming !== undefined && VALID_REQUEST_ID.test(incoming) ? incoming : `req_${randomToken(20)}`
    const span = yield* Effect.option(Effect.currentSpan)
    const started = yield* Effect.clockWith((c) => c.currentTimeMillis)
    yield* Effect.annotateCurrentSpan({ "http.request_id": requestId })
    // A pre-response handler, not Effect.map: routers may answer before the middleware sees the response.
    yield* HttpApp.appendPreResponseHandler((_req, res) => Effect.succeed(HttpServerResponse.setHeader(res, REQUEST_ID_HEADER, requestId)))
    return yield* app.pipe(
      Effect.annotateLogs("request_id", requestId),
      Effect.onExit((exit) =>
        Effect.gen(function*() {
          const ended = yield* Effect.clockWith((c) => c.currentTimeMillis)
          const matched = Option.flatMap(span, (sp) => Option.fromNullable(sp.attributes.get("http.route")))
          const route = Option.match(matched, { onNone: () => UNMATCHED_ROUTE, onSome: (r) => (typeof r === "string" ? r : UNMATCHED_ROUTE) })
          if (Option.isNone(matched)) yield* Effect.annotateCurrentSpan({ "http.route": UNMATCHED_ROUTE })
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

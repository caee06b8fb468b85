/**
 * HTTP server middleware: request ids (accepted from `X-Request-Id` when well formed, else
 * generated), a `request_id` log annotation and span attribute, and the `flexprice_http_*`
 * metrics labelled by the route template the router matched (`/v1/customers/:id`; the router
 * records it on the server span as `http.route`), or `unmatched`: the label set is the route
 * table, whatever paths clients send.
 *
 * The server span's `url.full` / `url.query` and the access log carry query parameter names
 * only, never their values (cursors, external ids, emails a client put in a URL).
 *
 * Use inside the server span that @effect/platform creates for every request:
 *   HttpApiBuilder.serve((app) => observeHttp(logHttp(errorEnvelope(allowed)(app))))
 */
import { HttpApp, HttpMiddleware, HttpServerError, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Cause, Effect, Exit, Metric, MetricLabel, Option } from "effect"
import { randomToken } from "../domain/Ids.js"
import { errorSummary } from "../http/Errors.js"
import * as Metrics from "./Metrics.js"
import { FILTERED, scrubString } from "./Scrub.js"

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
    // @effect/platform's tracer wrote the full URL before this runs; the span is still open
    if (Option.isSome(span) && request.url.includes("?")) {
      const full = span.value.attributes.get("url.full")
      if (typeof full === "string") span.value.attribute("url.full", scrubUrl(full))
      const query = span.value.attributes.get("url.query")
      if (typeof query === "string") span.value.attribute("url.query", scrubQuery(query))
    }
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

const MAX_LOGGED_URL = 512

/** `a=1&b=2` → `a=[Filtered]&b=[Filtered]`: the names say what was asked, values stay out. */
export const scrubQuery = (query: string): string =>
  query
    .split("&")
    .map((part) => {
      const eq = part.indexOf("=")
      return eq < 0 ? part : `${part.slice(0, eq)}=${FILTERED}`
    })
    .join("&")

/** A URL (absolute or path + query) with every query value replaced, bounded in length. */
export const scrubUrl = (url: string): string => {
  const hash = url.indexOf("#")
  const noHash = hash < 0 ? url : url.slice(0, hash)
  const q = noHash.indexOf("?")
  const out = q < 0 ? noHash : `${noHash.slice(0, q)}?${scrubQuery(noHash.slice(q + 1))}`
  return scrubString(out.length > MAX_LOGGED_URL ? `${out.slice(0, MAX_LOGGED_URL)}…` : out)
}

/**
 * One access-log line per request: `Sent HTTP response` at INFO, or for a 5xx an ERROR line
 * whose message is the answer's code and message (`database_unavailable: the database is not
 * reachable; retry later`) with the failure's cause when there is one. Replaces
 * HttpMiddleware.logger, which logged 5xx at INFO with an empty message and the full URL.
 */
export const logHttp = HttpMiddleware.make((app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const exit = yield* Effect.exit(app)
    const [response, cause] = Exit.isSuccess(exit) ? [exit.value, Cause.empty] : yield* HttpServerError.causeResponse(exit.cause)
    const annotations = { "http.method": request.method, "http.url": scrubUrl(request.url), "http.status": response.status }
    if (response.status >= 500) {
      const summary = errorSummary(response)
      const text = summary !== undefined ? `${summary.code}: ${summary.message}` : `HTTP ${response.status}`
      yield* Effect.annotateLogs(Cause.isEmpty(cause) ? Effect.logError(text) : Effect.logError(text, cause), annotations)
    } else {
      yield* Effect.annotateLogs(Effect.logInfo("Sent HTTP response"), annotations)
    }
    return yield* exit
  })
)

import { HttpClient, HttpClientRequest, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { observeHttp, UNMATCHED_ROUTE } from "../../src/observability/HttpObservability.js"
import { makeCapture } from "../../src/observability/Logging.js"
import { SpanTree, Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"

describe("observeHttp", () => {
  it.live("sets/propagates X-Request-Id, annotates logs and span, counts by route and status class", () => {
    const capture = makeCapture()
    const app = HttpRouter.empty.pipe(
      HttpRouter.get("/v1/things/:id", Effect.as(Effect.logInfo("handling"), HttpServerResponse.text("ok"))),
      HttpRouter.get("/boom", Effect.die("kaput"))
    )
    const ServerLive = HttpServer.serve(app, observeHttp).pipe(Layer.provideMerge(NodeHttpServer.layerTest))
    return Effect.gen(function*() {
      const t = yield* TelemetryTest
      const client = yield* HttpClient.HttpClient
      const route = "/v1/things/:id"
      const before = yield* t.metricValue("flexprice_http_requests_total", { route, status: "2xx" })
      const given = yield* client.execute(HttpClientRequest.get("/v1/things/thg_abcdef123").pipe(HttpClientRequest.setHeader("x-request-id", "abc-123")))
      expect(given.headers["x-request-id"]).toBe("abc-123")
      const generated = yield* client.execute(HttpClientRequest.get("/v1/things/thg_zzzzzz999").pipe(HttpClientRequest.setHeader("x-request-id", "bad id with spaces")))
      expect(generated.headers["x-request-id"]).toMatch(/^req_[0-9a-z]{20}$/)
      const beforeUnmatched = yield* t.metricValue("flexprice_http_requests_total", { route: UNMATCHED_ROUTE, status: "4xx" })
      const missing = yield* client.execute(HttpClientRequest.get("/no/such/thg_abcdef123"))
      expect(missing.status).toBe(404)
      const boom = yield* client.execute(HttpClientRequest.get("/boom"))
      expect(boom.status).toBe(500)
      yield* Effect.sleep("50 millis")
      expect(yield* t.metricValue("flexprice_http_requests_total", { route, status: "2xx" })).toBe(before + 2)
      expect(yield* t.metricValue("flexprice_http_requests_total", { route: "/boom", status: "5xx" })).toBeGreaterThanOrEqual(1)
      expect(yield* t.metricValue("flexprice_http_requests_total", { route: UNMATCHED_ROUTE, status: "4xx" })).toBe(beforeUnmatched + 1)
      expect(capture.records.find((r) => r["msg"] === "handling")?.["request_id"]).toBe("abc-123")
      const spans = yield* t.spans
      const server = spans.find((s) => s.attributes["http.request_id"] === "abc-123")
      expect(server).toBeDefined()
      expect(server!.attributes["http.route"]).toBe(route)
      expect(SpanTree.parentId(server!)).toBeDefined()
    }).pipe(Effect.provide(ServerLive), Effect.provide(Layer.merge(Telemetry.layerTest, capture.layer)))
  })
})

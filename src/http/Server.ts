/** The HTTP server: the API, its OpenAPI document (/openapi.json) and docs page (/docs). */
import { HttpApiBuilder, HttpApiSwagger, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"
import { HttpConfig } from "../config/AppConfig.js"
import { FlexPriceApi } from "./Api.js"
import { CoreHttpLive } from "./CoreHttp.js"
import { errorEnvelope, routeMethods } from "./Errors.js"
import { decodeFailureAsInvalidInput } from "./ErrorContract.js"
import { inputGuard } from "./InputGuard.js"
import { logHttp, observeHttp } from "../observability/HttpObservability.js"
import { PROMETHEUS_CONTENT_TYPE, renderPrometheus } from "../observability/Prometheus.js"
import { MigrationHttpWithRunnerLive } from "./MigrationHttp.js"
import { AuthenticationLive } from "./Security.js"
import { StripeConfigLive } from "./StripeConfigHttp.js"
import { AdminHttpLive } from "./AdminHttp.js"
import { WebhooksLive } from "./WebhooksHttp.js"
import { SyncHttpLive } from "./SyncHttp.js"
import { TenantKeysLive } from "./TenantKeysHttp.js"

export const ApiLive = HttpApiBuilder.api(FlexPriceApi).pipe(
  Layer.provide(CoreHttpLive),
  Layer.provide(StripeConfigLive),
  Layer.provide(AdminHttpLive),
  Layer.provide(WebhooksLive),
  Layer.provide(SyncHttpLive),
  Layer.provide(MigrationHttpWithRunnerLive),
  Layer.provide(TenantKeysLive),
  Layer.provide(AuthenticationLive)
)

/** Request decoding failures answered as InvalidInput `invalid_request` (ErrorContract.ts). */
const DecodeFailuresAsInvalidInput = HttpApiBuilder.middleware(FlexPriceApi, decodeFailureAsInvalidInput)

/** Prometheus scrape endpoint beside the API (not part of the OpenAPI document). */
const MetricsRoute = HttpApiBuilder.Router.use((router) =>
  router.get(
    "/metrics",
    Effect.map(renderPrometheus(), (text) => HttpServerResponse.text(text, { contentType: PROMETHEUS_CONTENT_TYPE }))
  )
)

/** The API served on whatever HttpServer is provided. */
export const HttpApiLive = Layer.unwrapEffect(
  Effect.map(HttpConfig, ({ maxBodyBytes }) => {
    const envelope = errorEnvelope(routeMethods(FlexPriceApi))
    return HttpApiBuilder.serve((app) => observeHttp(logHttp(envelope(inputGuard(maxBodyBytes)(app)))))
  })
).pipe(
  Layer.provide(MetricsRoute),
  Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
  Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
  Layer.provide(DecodeFailuresAsInvalidInput),
  Layer.provide(ApiLive),
  HttpServer.withLogAddress
)

/** Node's HTTP server on FLEXPRICE_HTTP_ADDR. */
export const NodeServerLive = Layer.unwrapEffect(
  Effect.map(HttpConfig, ({ addr }) => NodeHttpServer.layer(createServer, { host: addr.host, port: addr.port }))
)

export const HttpServerLive = HttpApiLive.pipe(Layer.provide(NodeServerLive))

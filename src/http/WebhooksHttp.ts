/** Handlers of the webhook endpoints: read the raw body under the cap, hand it to WebhookProcessor. */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Option, Stream } from "effect"
import { Forbidden, InternalError, InvalidInput, PayloadTooLarge } from "../domain/Errors.js"
import { EventDestination } from "../webhooks/EventDestination.js"
import { WebhookProcessor } from "../webhooks/WebhookProcessor.js"
import { FlexPriceApi } from "./Api.js"

class BodyTooLarge {
  readonly _tag = "BodyTooLarge"
}

/** Reads at most `max` bytes; one byte more fails without reading the rest. */
const readCapped = (request: HttpServerRequest.HttpServerRequest, max: number) =>
  Effect.gen(function* () {
    const declared = Number(request.headers["content-length"] ?? "0")
    if (Number.isFinite(declared) && declared > max) return Option.none<Uint8Array>()
    const chunks: Array<Uint8Array> = []
    let size = 0
    const read = yield* request.stream.pipe(
      Stream.runForEach((chunk) =>
        Effect.suspend(() => {
          size += chunk.length
          if (size > max) return Effect.fail(new BodyTooLarge())
          chunks.push(chunk)
          return Effect.void
        })
      ),
      Effect.as(true),
      Effect.catchAll((e) => (e instanceof BodyTooLarge ? Effect.succeed(false) : Effect.fail(InvalidInput.of("unreadable_body", "the request body could not be read"))))
    )
    return read ? Option.some(Buffer.concat(chunks, size) as Uint8Array) : Option.none<Uint8Array>()
  })

export const WebhooksLive = HttpApiBuilder.group(FlexPriceApi, "webhooks", (handlers) =>
  Effect.gen(function* () {
    const processor = yield* WebhookProcessor
    const destination = yield* EventDestination
    const max = processor.settings.maxBodyBytes

    const handle = (
      request: HttpServerRequest.HttpServerRequest,
      route: { tenantId: string; environmentId: string } | null,
      target: "webhook" | "event_destination" = "webhook"
    ) =>
      Effect.gen(function* () {
        const body = yield* readCapped(request, max)
        const common = {
          signature: request.headers["stripe-signature"],
          remoteAddress: Option.getOrUndefined(request.remoteAddress),
          forwardedFor: request.headers["x-forwarded-for"],
          body: Option.getOrElse(body, () => new Uint8Array(0)),
          bodyTooLarge: Option.isNone(body)
        }
        // An oversized body is still checked against the allowlist first (a 403 says less than a 413).
        const result =
          target === "event_destination" && route !== null
            ? yield* destination.receive({ ...common, route })
            : yield* processor.receive({ ...common, route })
        return HttpServerResponse.unsafeJson({ received: true, event_id: result.eventId, status: result.status })
      }).pipe(
        Effect.catchTags({
          WebhookRejected: (e) =>
            e.status === 403
              ? Effect.fail(new Forbidden({ code: e.code, message: e.message }))
              : e.status === 413
              ? Effect.fail(new PayloadTooLarge({ code: e.code, message: e.message, details: { max_bytes: max } }))
              : Effect.fail(InvalidInput.of(e.code, e.message)),
          WebhookProcessingFailed: (e) =>
            Effect.fail(InternalError.of("webhook_processing_failed", `processing of ${e.eventId} failed; it will be retried on redelivery`)),
          SqlError: () => Effect.fail(InternalError.of("webhook_processing_failed", "the database is not reachable; retry later")),
          DecryptionFailed: () => Effect.fail(InternalError.of("decryption_failed", "the webhook secret could not be decrypted"))
        })
      )

    return handlers
      .handleRaw("stripeForEnvironment", ({ request, path }) => handle(request, { tenantId: path.tenant_id, environmentId: path.environment_id }))
      .handleRaw("stripeEventDestination", ({ request, path }) =>
        handle(request, { tenantId: path.tenant_id, environmentId: path.environment_id }, "event_destination")
      )
      .handleRaw("stripeGlobal", ({ request }) => handle(request, null))
  })
)

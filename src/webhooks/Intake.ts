/**
 * What every Stripe delivery goes through before its event is looked at, shared by the v1
 * webhook endpoints (WebhookProcessor) and the v2 event destination (EventDestination): the
 * source address and size checks, one signature verifier (the `stripe` SDK's, on the raw bytes),
 * the typed rejections and the outcome metrics.
 */
import { Clock, Data, Effect, Metric, Option, Redacted } from "effect"
import Stripe from "stripe"
import type { TenantScope } from "../domain/Ids.js"
import * as Metrics from "../observability/Metrics.js"
import { clientIp, type WebhookSettings } from "./WebhookConfig.js"

export type RejectReason = "signature" | "timestamp" | "body_too_large" | "malformed" | "ip_not_allowed" | "tenant" | "not_configured"

/** The delivery is refused before anything is processed. */
export class WebhookRejected extends Data.TaggedError("WebhookRejected")<{
  readonly status: 400 | 403 | 413
  readonly code: string
  readonly message: string
  readonly reason: RejectReason
}> {}

/** Processing failed on our side; the row records `error`. */
export class WebhookProcessingFailed extends Data.TaggedError("WebhookProcessingFailed")<{
  readonly eventId: string
  readonly message: string
}> {}

export const reject = (status: 400 | 403 | 413, code: string, message: string, reason: RejectReason) =>
  new WebhookRejected({ status, code, message, reason })

/** The delivery as the HTTP layer hands it over, before the route's tenant is known. */
export interface RawDelivery {
  readonly body: Uint8Array
  /** The body was over the cap and not read (answered 413 after the address check). */
  readonly bodyTooLarge?: boolean
  readonly signature: string | undefined
  readonly remoteAddress: string | undefined
  readonly forwardedFor: string | undefined
}

/** The source address allowlist first (a stranger learns nothing else), then the size cap. */
export const admit = (settings: WebhookSettings, d: RawDelivery): Effect.Effect<void, WebhookRejected> =>
  Effect.gen(function* () {
    if (Option.isSome(settings.allowedIps)) {
      const ip = clientIp(d.remoteAddress, d.forwardedFor, settings.trustedProxies)
      if (ip === undefined || !settings.allowedIps.value.contains(ip))
        return yield* reject(403, "ip_not_allowed", "the source address is not in STRIPE_WEBHOOK_ALLOWED_IPS", "ip_not_allowed")
    }
    if (d.bodyTooLarge === true || d.body.length > settings.maxBodyBytes)
      return yield* reject(413, "payload_too_large", `webhook bodies are limited to ${settings.maxBodyBytes} bytes`, "body_too_large")
  })

/**
 * Checks the Stripe-Signature header against the raw body with the `stripe` SDK
 * (`webhooks.signature.verifyHeader`, what `constructEvent` and `parseEventNotification` call)
 * and answers the body parsed as JSON.
 */
export const verifySignature = (options: {
  readonly settings: WebhookSettings
  readonly body: Uint8Array
  readonly header: string | undefined
  readonly secret: Redacted.Redacted<string>
}): Effect.Effect<unknown, WebhookRejected> =>
  Effect.gen(function* () {
    const { body, header, secret, settings } = options
    const tolerance = settings.toleranceSeconds
    if (header === undefined || header.trim() === "")
      return yield* reject(400, "invalid_signature", "the Stripe-Signature header is missing", "signature")
    const now = yield* Clock.currentTimeMillis
    const text = Buffer.from(body).toString("utf8")
    yield* Effect.try({
      try: () => Stripe.webhooks.signature!.verifyHeader(text, header, Redacted.value(secret), tolerance, undefined, now),
      catch: (e) =>
        e instanceof Stripe.errors.StripeSignatureVerificationError && /tolerance/i.test(e.message)
          ? reject(400, "webhook_timestamp_out_of_tolerance", `the signature timestamp is more than ${tolerance} s old`, "timestamp")
          : reject(400, "invalid_signature", "no v1 signature in the Stripe-Signature header matches the body", "signature")
    })
    // stripe-node checks only the age (validateComputedSignature in src/Webhooks.ts:
    // `timestampAge > tolerance`), so a signature dated in the future would stay replayable
    // until then: refuse one dated more than the tolerance ahead (clock skew stays accepted).
    const signedAt = /(?:^|,)\s*t=(\d{1,15})(?:,|$)/.exec(header)
    if (signedAt !== null && Number(signedAt[1]) > Math.floor(now / 1000) + tolerance)
      return yield* reject(400, "webhook_timestamp_out_of_tolerance", `the signature timestamp is more than ${tolerance} s in the future`, "timestamp")
    return yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: () => reject(400, "malformed_json", "the body is not valid JSON", "malformed") })
  })

/**
 * Counts a delivery in `webhooks_total` (by event type and outcome, tenant labels on success) and
 * the signature failures, times it, and puts the outcome on the current span. `typeSeen` answers
 * the event type once the body was verified ("unknown" before).
 */
export const measured = <A extends { readonly type: string; readonly status: string; readonly scope: TenantScope }, E extends { readonly _tag: string }, R>(
  typeSeen: () => string,
  delivery: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(Clock.currentTimeMillis, (started) =>
    delivery.pipe(
      Effect.tapBoth({
        onFailure: (e) =>
          Effect.gen(function* () {
            const outcome = e._tag === "WebhookRejected" ? "invalid" : "failed"
            const rejected = e instanceof WebhookRejected ? e : undefined
            yield* Effect.annotateCurrentSpan({ "webhook.outcome": outcome, ...(rejected ? { "webhook.reject_code": rejected.code } : {}) })
            yield* Metric.increment(Metric.tagged(Metric.tagged(Metrics.webhooksTotal, "type", typeSeen()), "outcome", outcome))
            if (rejected && rejected.reason !== "tenant" && rejected.reason !== "not_configured")
              yield* Metric.increment(Metric.tagged(Metrics.webhookSignatureFailuresTotal, "reason", rejected.reason))
          }),
        onSuccess: (r) =>
          Effect.gen(function* () {
            yield* Effect.annotateCurrentSpan({ "webhook.outcome": r.status })
            const counter = Metric.tagged(Metric.tagged(Metrics.webhooksTotal, "type", r.type), "outcome", r.status)
            yield* Metric.increment(Metric.taggedWithLabels(counter, yield* Metrics.tenantTags(r.scope)))
          })
      }),
      Effect.ensuring(Effect.flatMap(Clock.currentTimeMillis, (end) => Metric.update(Metrics.webhookDurationSeconds, (end - started) / 1000)))
    ))

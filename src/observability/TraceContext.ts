/**
 * Trace context and header redaction for the HTTP edges.
 */
import { Headers } from "@effect/platform"
import { Effect, Layer, Option } from "effect"

/**
 * Request/response headers that must never be copied into span attributes. @effect/platform's
 * server tracer records every header except `authorization`, `cookie`, `set-cookie`, `x-api-key`.
 */
export const SECRET_HEADER_NAMES: ReadonlyArray<string | RegExp> = [
  "stripe-signature",
  "x-flexprice-api-key",
  "proxy-authorization",
  "x-sentry-auth",
  /secret/i,
  /token/i,
  /api[-_]?key/i
]

/**
 * W3C `traceparent` for the current span, if any. Effect's HttpClient injects this itself;
 * the stripe SDK does not, so the Stripe client passes `{ headers: yield* traceHeaders }` as
 * request options.
 */
export const traceparent: Effect.Effect<Option.Option<string>> = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.map((span) => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`)
)

/** `{ traceparent }` for the current span, or `{}` outside any span. */
export const traceHeaders: Effect.Effect<Record<string, string>> = Effect.map(
  traceparent,
  Option.match({ onNone: () => ({}), onSome: (tp) => ({ traceparent: tp }) })
)

/**
 * Keeps secret-bearing headers (Stripe-Signature, API keys) out of the HTTP server/client span
 * attributes. Included in `Telemetry.layer` and `layerTest`; provide it to the HTTP server layer
 * (as a dependency, so its fibers inherit the setting) if you build the server without them.
 */
export const redactSecretHeaders: Layer.Layer<never> = Layer.scopedDiscard(
  Effect.locallyScopedWith(Headers.currentRedactedNames, (names) => [...names, ...SECRET_HEADER_NAMES])
)

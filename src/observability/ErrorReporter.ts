/**
 * Error reporting for Stripe-integration failures. `SENTRY_DSN` unset → `none`: the Sentry SDK
 * module is never imported and nothing is sent. Set → events go through the official SDK's
 * client (`@sentry/core`, imported with `import()` only then) and a `fetch` transport.
 *
 * Why `@sentry/core` and not `@sentry/node` (measured with npm 11 against this project's lock;
 * no candidate needs an install script):
 * - 11.12.0 (latest) depends on `@opentelemetry/api ^1.9.1`, so it installs a second API copy
 *   (1.10.0) beside the project's pinned 1.9.0. The API refuses a global registration from a copy
 *   whose version differs from the one already registered ("… does not match previously
 *   registered API"), which splits the tracer provider @effect/opentelemetry relies on. It adds 22
 *   packages, among them the `sentry` CLI, `@sentry/bundler-plugins` and the native `oxc-parser`
 *   binding, and its client registers module-load hooks (diagnostics-channel injection) unless
 *   opted out. (Its OpenTelemetry setup is opt-in: `enableOpenTelemetrySetup`;
 *   `skipOpenTelemetrySetup` no longer exists.)
 * - 10.78.0 depends on `>=1.9.1 <1.10.0`: a second copy (1.9.1) again, 9 packages, and
 *   `Sentry.init()` installs its own global tracer provider, propagator and context manager
 *   unless `skipOpenTelemetrySetup`.
 * - 8.55.2 / 9.47.2 accept 1.9.0 but add 217 / 206 packages (a second OpenTelemetry 1.x SDK,
 *   26 instrumentations), with the same global setup unless `skipOpenTelemetrySetup`.
 * `@sentry/core` 11.12.0 adds 2 packages (itself and `@sentry/conventions`), no OpenTelemetry,
 * and is what `@sentry/node` is built on: the same client, scopes, event builder, stack parser,
 * envelopes, rate limiting and pluggable `transport`. The client is constructed directly (no
 * `init()`), so no global client, integration, hook or instrumentation is installed.
 *
 * Reports are sent in the background (the sync path never waits on Sentry); `flush` awaits them.
 * `beforeSend` passes the whole event through `scrub`, so secrets in messages, tags or context
 * never leave the process.
 */
import { Cause, Config, Context, Duration, Effect, Layer, Option, Redacted, Runtime } from "effect"
import { randomBytes } from "node:crypto"
import * as os from "node:os"
import type { BaseTransportOptions, ErrorEvent, EventHint, Transport } from "@sentry/core"
import { scrub, scrubString } from "./Scrub.js"

export interface ErrorContext {
  readonly tenantId?: string | undefined
  readonly environmentId?: string | undefined
  /** Aggregation window, e.g. `2025-01-01T10:00:00Z/2025-01-01T11:00:00Z`. */
  readonly window?: string | undefined
  readonly batchId?: string | undefined
  readonly stripeRequestId?: string | undefined
  /** Typed error code (`stripe_authentication_failed`, …); taken from the error when absent. */
  readonly code?: string | undefined
  /** Where it happened: `sync`, `webhook`, `migration`, `config`, … */
  readonly area?: string | undefined
  readonly extra?: Readonly<Record<string, unknown>> | undefined
}

export interface ErrorReporterService {
  readonly report: (error: unknown, context?: ErrorContext) => Effect.Effect<void>
  /** Waits (bounded) for reports still in flight. */
  readonly flush: (timeout?: Duration.DurationInput) => Effect.Effect<void>
  readonly enabled: boolean
}

export class ErrorReporter extends Context.Tag("flexprice/ErrorReporter")<ErrorReporter, ErrorReporterService>() {
  /** Default: reports are dropped. */
  static readonly layerNone: Layer.Layer<ErrorReporter> = Layer.succeed(ErrorReporter, {
    report: () => Effect.void,
    flush: () => Effect.void,
    enabled: false
  })

  /** Loads the Sentry SDK (`import()`) when built; closes the client, flushing, on release. */
  static readonly layerSentry = (options: SentryOptions): Layer.Layer<ErrorReporter> =>
    Layer.scoped(ErrorReporter, makeSentry(options))

  /** `SENTRY_DSN` (+ `SENTRY_ENVIRONMENT`, `SENTRY_RELEASE`) → Sentry; otherwise none. */
  static readonly layerFromEnv: Layer.Layer<ErrorReporter> = Layer.unwrapEffect(
    Effect.gen(function*() {
      const dsn = yield* Config.option(Config.redacted("SENTRY_DSN"))
      if (Option.isNone(dsn) || Redacted.value(dsn.value).trim() === "") return ErrorReporter.layerNone
      const environment = yield* Config.string("SENTRY_ENVIRONMENT").pipe(Config.withDefault("production"))
      const release = yield* Config.option(Config.string("SENTRY_RELEASE"))
      return ErrorReporter.layerSentry({
        dsn: dsn.value,
        environment,
        release: Option.getOrUndefined(release)
      })
    }).pipe(Effect.orDie)
  )
}

/** Reports typed failures of `self` (not interruptions) and re-fails with the same cause. */
export const reportFailures = (context: ErrorContext) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tapErrorCause(self, (cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.serviceOption(ErrorReporter).pipe(
        Effect.flatMap(Option.match({
          onNone: () => Effect.void,
          onSome: (r) => r.report(Option.getOrElse(Cause.failureOption(cause), () => Cause.squash(cause)), context)
        }))
      ))

// ---------------------------------------------------------------------------------------------
// Sentry SDK

export interface SentryOptions {
  readonly dsn: Redacted.Redacted<string>
  readonly environment?: string | undefined
  readonly release?: string | undefined
  readonly serverName?: string | undefined
  /** Per-request timeout; Sentry being slow must not pile up requests. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Used by the default transport; defaults to global fetch. */
  readonly fetch?: typeof globalThis.fetch | undefined
  /** The SDK's `transport` option (tests pass one that records envelopes); default: `fetch`. */
  readonly transport?: ((options: BaseTransportOptions) => Transport) | undefined
}

/**
 * Validates a DSN and returns it normalised (`https://<key>@host[:port][/path]/<project>`).
 * Stricter than the SDK's own parser on purpose: the SDK prints a DSN it cannot parse to the
 * console, and a DSN is a credential — so only shapes it is certain to accept get through.
 */
export const parseDsn = (dsn: Redacted.Redacted<string>): Option.Option<Redacted.Redacted<string>> => {
  let url: URL
  try {
    url = new URL(Redacted.value(dsn).trim())
  } catch {
    return Option.none()
  }
  const segments = url.pathname.split("/").filter((s) => s !== "")
  const projectId = segments.pop()
  const word = /^\w+$/
  if (
    (url.protocol !== "https:" && url.protocol !== "http:") ||
    !word.test(url.username) ||
    (url.password !== "" && !word.test(url.password)) ||
    projectId === undefined || !/^\d+$/.test(projectId) ||
    !segments.every((s) => /^[\w.~-]+$/.test(s))
  ) return Option.none()
  const prefix = segments.length > 0 ? `/${segments.join("/")}` : ""
  return Option.some(Redacted.make(`${url.protocol}//${url.username}@${url.host}${prefix}/${projectId}`))
}

const TAG_MAX = 200 // Sentry's limit for tag values

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : undefined

/** Tags carried by every report: what the issue asks to filter and group Stripe failures by. */
export const tagsOf = (error: unknown, context: ErrorContext): Record<string, string> => {
  const tags: Record<string, string> = {}
  const put = (k: string, v: string | undefined) => {
    if (v !== undefined && v !== "") tags[k] = scrubString(v).slice(0, TAG_MAX)
  }
  // `_id` suffixes: Sentry reserves `environment` for the deployment environment.
  put("tenant_id", context.tenantId)
  put("environment_id", context.environmentId)
  put("window", context.window)
  put("batch_id", context.batchId)
  put("stripe_request_id", context.stripeRequestId)
  put("error_code", context.code ?? errorCode(error))
  put("area", context.area)
  return tags
}

/**
 * `beforeSend`: the exception is named after an Effect error's `_tag`, then every string in the
 * event passes through `scrub` (messages, frames, tags, extra, contexts). The SDK's internal
 * processing metadata is kept as is (it is not serialised into the event).
 */
const finishEvent = (event: ErrorEvent, hint: EventHint): ErrorEvent => {
  const original = hint.originalException
  const primary = event.exception?.values?.at(-1)
  if (primary && typeof original === "object" && original !== null && "_tag" in original && typeof original._tag === "string") {
    primary.type = original._tag
    if (!(original instanceof Error) && "message" in original && typeof original.message === "string") {
      primary.value = original.message
    }
  }
  const { sdkProcessingMetadata, ...rest } = event
  return { ...(scrub(rest) as ErrorEvent), ...(sdkProcessingMetadata ? { sdkProcessingMetadata } : {}) }
}

const disabled: ErrorReporterService = { report: () => Effect.void, flush: () => Effect.void, enabled: false }

const makeSentry = (options: SentryOptions) =>
  Effect.gen(function*() {
    const dsn = parseDsn(options.dsn)
    if (Option.isNone(dsn)) {
      // The DSN is a credential: say it is malformed, never echo it.
      yield* Effect.logWarning(
        "SENTRY_DSN is not a valid DSN (expected https://<key>@<host>/<project>); error reporting disabled"
      )
      return disabled
    }
    const loaded = yield* Effect.tryPromise(() => Promise.all([import("@sentry/core"), import("@sentry/core/server")]))
      .pipe(Effect.option)
    if (Option.isNone(loaded)) {
      yield* Effect.logWarning("the Sentry SDK (@sentry/core) could not be loaded; error reporting disabled")
      return disabled
    }
    const [core, { ServerRuntimeClient, nodeStackLineParser }] = loaded.value
    const timeoutMs = Duration.toMillis(options.timeout ?? Duration.seconds(5))
    const runtime = yield* Effect.runtime<never>()
    const logDebug = (message: string) => Runtime.runFork(runtime)(Effect.logDebug(message))

    const doFetch = options.fetch ?? globalThis.fetch
    /** The SDK's transport (rate limits, bounded buffer, dropped-event accounting) over `fetch`. */
    const fetchTransport = (transportOptions: BaseTransportOptions): Transport =>
      core.createTransport(transportOptions, (request) =>
        doFetch(transportOptions.url, {
          method: "POST",
          headers: { "content-type": "application/x-sentry-envelope", ...transportOptions.headers },
          body: request.body,
          signal: AbortSignal.timeout(timeoutMs)
        }).then(
          (res) => {
            if (!res.ok) logDebug(`error report rejected by Sentry: HTTP ${res.status}`)
            return {
              statusCode: res.status,
              headers: {
                "x-sentry-rate-limits": res.headers.get("x-sentry-rate-limits"),
                "retry-after": res.headers.get("retry-after")
              }
            }
          },
          (e: unknown) => {
            logDebug("error report not delivered")
            throw e
          }
        ))

    const client = yield* Effect.acquireRelease(
      Effect.sync(() =>
        new ServerRuntimeClient({
          dsn: Redacted.value(dsn.value),
          environment: options.environment ?? "production",
          release: options.release,
          serverName: options.serverName ?? os.hostname(),
          platform: "node",
          runtime: { name: "node", version: process.version },
          // No default integrations: nothing global is patched or listened to.
          integrations: [],
          traceLifecycle: "static",
          sendClientReports: false,
          stackParser: core.createStackParser(nodeStackLineParser()),
          transport: options.transport ?? fetchTransport,
          beforeSend: finishEvent,
          _metadata: {
            sdk: {
              name: "flexprice.sentry-core",
              version: core.SDK_VERSION,
              packages: [{ name: "npm:@sentry/core", version: core.SDK_VERSION }]
            }
          }
        })
      ),
      (c) => Effect.tryPromise(() => c.close(timeoutMs)).pipe(Effect.ignore)
    )

    const report = (error: unknown, context: ErrorContext = {}) =>
      Effect.gen(function*() {
        const span = yield* Effect.option(Effect.currentSpan)
        const scope = new core.Scope()
        scope.setLevel("error")
        scope.setTags(tagsOf(error, context))
        if (context.extra) scope.setExtras(scrub(context.extra) as Record<string, unknown>)
        if (Option.isSome(span)) {
          // Links the report to the trace exported by the OpenTelemetry layer.
          scope.setPropagationContext({
            traceId: span.value.traceId,
            propagationSpanId: span.value.spanId,
            sampleRand: randomBytes(4).readUInt32BE() / 2 ** 32
          })
        }
        client.captureException(error, { originalException: error }, scope)
      }).pipe(Effect.catchAllDefect(() => Effect.logDebug("error report could not be built")))

    const flush = (t: Duration.DurationInput = Duration.millis(timeoutMs)) =>
      Effect.tryPromise(() => client.flush(Duration.toMillis(t))).pipe(Effect.ignore)

    return { report, flush, enabled: true } satisfies ErrorReporterService
  })

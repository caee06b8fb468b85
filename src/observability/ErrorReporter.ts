/**
 * Error reporting for Stripe-integration failures. `SENTRY_DSN` unset → `none` (nothing loaded,
 * nothing sent). Set → events are POSTed as Sentry envelopes with plain `fetch`.
 *
 * Why not `@sentry/node`: the project may not add packages, and the envelope protocol needed for
 * "an error with tags" is small and stable (https://develop.sentry.dev/sdk/envelopes/). The
 * service interface is the seam: swapping in `@sentry/node` later only replaces `layerSentry`.
 *
 * Reports are sent in the background (the sync path never waits on Sentry); `flush` awaits them.
 * Every string and context value passes through `scrub` first.
 */
import { Cause, Config, Context, Duration, Effect, FiberSet, Layer, Option, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import * as os from "node:os"
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
// Sentry envelope protocol

export interface SentryOptions {
  readonly dsn: Redacted.Redacted<string>
  readonly environment?: string | undefined
  readonly release?: string | undefined
  readonly serverName?: string | undefined
  /** Per-request timeout; Sentry being slow must not pile up requests. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Injected for tests; defaults to global fetch. */
  readonly fetch?: typeof globalThis.fetch | undefined
}

export interface ParsedDsn {
  readonly envelopeUrl: string
  readonly publicKey: Redacted.Redacted<string>
  readonly projectId: string
}

/** `https://<key>@host[:port][/path]/<project>` → `https://host[:port][/path]/api/<project>/envelope/`. */
export const parseDsn = (dsn: Redacted.Redacted<string>): Option.Option<ParsedDsn> => {
  let url: URL
  try {
    url = new URL(Redacted.value(dsn).trim())
  } catch {
    return Option.none()
  }
  const segments = url.pathname.split("/").filter((s) => s !== "")
  const projectId = segments.pop()
  if (url.username === "" || projectId === undefined || !/^\d+$/.test(projectId)) return Option.none()
  const prefix = segments.length > 0 ? `/${segments.join("/")}` : ""
  return Option.some({
    envelopeUrl: `${url.protocol}//${url.host}${prefix}/api/${projectId}/envelope/`,
    publicKey: Redacted.make(decodeURIComponent(url.username)),
    projectId
  })
}

const SDK = { name: "flexprice.envelope", version: "0.1.0" }

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : undefined

const exceptionOf = (error: unknown) => {
  if (error instanceof Error) {
    const tag = "_tag" in error && typeof error._tag === "string" ? error._tag : undefined
    return {
      type: tag ?? error.name,
      value: scrubString(error.message),
      ...(error.stack
        ? {
          stacktrace: {
            // Sentry wants frames oldest first.
            frames: error.stack.split("\n").slice(1).map((l) => ({ function: scrubString(l.trim()) })).reverse()
          }
        }
        : {})
    }
  }
  if (typeof error === "object" && error !== null && "_tag" in error) {
    return { type: String(error._tag), value: scrubString(String((error as { message?: unknown }).message ?? "")) }
  }
  return { type: "Error", value: scrubString(typeof error === "string" ? error : JSON.stringify(scrub(error))) }
}

/** The envelope body (three JSON lines). Exported for tests. */
export const buildEnvelope = (
  error: unknown,
  context: ErrorContext,
  options: Pick<SentryOptions, "environment" | "release" | "serverName">,
  trace: { traceId: string; spanId: string } | undefined,
  now: Date
): { eventId: string; body: string } => {
  const eventId = randomBytes(16).toString("hex")
  const code = context.code ?? errorCode(error)
  const tags: Record<string, string> = {}
  const put = (k: string, v: string | undefined) => {
    if (v !== undefined && v !== "") tags[k] = scrubString(v).slice(0, 200)
  }
  put("tenant_id", context.tenantId)
  put("environment_id", context.environmentId)
  put("window", context.window)
  put("batch_id", context.batchId)
  put("stripe_request_id", context.stripeRequestId)
  put("error_code", code)
  put("area", context.area)
  const event = {
    event_id: eventId,
    timestamp: now.getTime() / 1000,
    platform: "node",
    level: "error",
    logger: "flexprice",
    server_name: options.serverName ?? os.hostname(),
    environment: options.environment ?? "production",
    ...(options.release ? { release: options.release } : {}),
    exception: { values: [exceptionOf(error)] },
    tags,
    extra: scrub(context.extra ?? {}),
    ...(trace ? { contexts: { trace: { trace_id: trace.traceId, span_id: trace.spanId } } } : {}),
    sdk: SDK
  }
  const header = { event_id: eventId, sent_at: now.toISOString(), sdk: SDK }
  return { eventId, body: `${JSON.stringify(header)}\n${JSON.stringify({ type: "event" })}\n${JSON.stringify(event)}\n` }
}

const makeSentry = (options: SentryOptions) =>
  Effect.gen(function*() {
    const parsed = parseDsn(options.dsn)
    if (Option.isNone(parsed)) {
      // The DSN is a credential: say it is malformed, never echo it.
      yield* Effect.logWarning("SENTRY_DSN is not a valid DSN (expected https://<key>@<host>/<project>); error reporting disabled")
      return { report: () => Effect.void, flush: () => Effect.void, enabled: false } satisfies ErrorReporterService
    }
    const { envelopeUrl, publicKey } = parsed.value
    const doFetch = options.fetch ?? globalThis.fetch
    const timeout = options.timeout ?? Duration.seconds(5)
    const auth = `Sentry sentry_version=7, sentry_client=${SDK.name}/${SDK.version}, sentry_key=${Redacted.value(publicKey)}`
    const inFlight = yield* FiberSet.make<void, never>()

    const send = (body: string) =>
      Effect.tryPromise({
        try: (signal) =>
          doFetch(envelopeUrl, {
            method: "POST",
            headers: { "content-type": "application/x-sentry-envelope", "x-sentry-auth": auth },
            body,
            signal
          }),
        catch: (e) => e
      }).pipe(
        Effect.flatMap((res) =>
          res.ok ? Effect.void : Effect.logDebug(`error report rejected by Sentry: HTTP ${res.status}`)
        ),
        Effect.timeout(timeout),
        Effect.catchAll(() => Effect.logDebug("error report not delivered")),
        Effect.withTracerEnabled(false)
      )

    const report = (error: unknown, context: ErrorContext = {}) =>
      Effect.gen(function*() {
        const span = yield* Effect.option(Effect.currentSpan)
        const trace = Option.getOrUndefined(Option.map(span, (s) => ({ traceId: s.traceId, spanId: s.spanId })))
        const now = new Date(yield* Effect.clockWith((c) => c.currentTimeMillis))
        const { body } = buildEnvelope(error, context, options, trace, now)
        yield* FiberSet.run(inFlight, send(body))
      })

    const flush = (t: Duration.DurationInput = timeout) =>
      FiberSet.awaitEmpty(inFlight).pipe(Effect.timeout(t), Effect.ignore)

    yield* Effect.addFinalizer(() => flush())
    return { report, flush, enabled: true } satisfies ErrorReporterService
  })

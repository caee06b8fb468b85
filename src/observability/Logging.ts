/**
 * Structured logs: one JSON object per line on stderr (stdout stays free for CLI output), with
 * the current trace and span ids so a log line leads to its trace in Jaeger, plus the fiber's
 * log annotations (request id, tenant, …). Secret-looking values are scrubbed as a last resort.
 *
 *   {"ts":"2025-01-01T00:00:00.000Z","level":"INFO","msg":"…","trace_id":"…","span_id":"…",
 *    "request_id":"…","tenant_id":"…","spans":{"SyncPipeline.run":12},"cause":"…"}
 *
 * Level from `FLEXPRICE_LOG_LEVEL` (trace|debug|info|warning|error|fatal|none; default info).
 * `FLEXPRICE_LOG_FORMAT=pretty` switches to Effect's human-readable logger for local use.
 */
import { Cause, Config, ConfigError, Context, Effect, Either, FiberRef, FiberRefs, HashMap, Layer, List, Logger, LogLevel, Option, Tracer } from "effect"
import { scrub, scrubString } from "./Scrub.js"

export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal", "none"] as const

const toLogLevel = (s: string): LogLevel.LogLevel | undefined => {
  switch (s.trim().toLowerCase()) {
    case "all":
    case "trace":
      return LogLevel.Trace
    case "debug":
      return LogLevel.Debug
    case "info":
      return LogLevel.Info
    case "warn":
    case "warning":
      return LogLevel.Warning
    case "error":
      return LogLevel.Error
    case "fatal":
      return LogLevel.Fatal
    case "none":
    case "off":
      return LogLevel.None
    default:
      return undefined
  }
}

export const LogLevelConfig: Config.Config<LogLevel.LogLevel> = Config.string("FLEXPRICE_LOG_LEVEL").pipe(
  Config.withDefault("info"),
  Config.mapOrFail((s) => {
    const level = toLogLevel(s)
    return level === undefined
      ? Either.left(ConfigError.InvalidData(["FLEXPRICE_LOG_LEVEL"], `expected one of ${LOG_LEVELS.join(", ")}, got "${s}"`))
      : Either.right(level)
  })
)

const messageText = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message]
  return parts
    .map((m) => (typeof m === "string" ? m : JSON.stringify(scrub(m))))
    .join(" ")
}

/** Builds the JSON record for one log call (exported for tests and custom sinks). */
export const formatRecord = (options: Logger.Logger.Options<unknown>): Record<string, unknown> => {
  const record: Record<string, unknown> = {
    ts: options.date.toISOString(),
    level: options.logLevel.label,
    msg: scrubString(messageText(options.message))
  }
  const span = Context.getOption(FiberRefs.getOrDefault(options.context, FiberRef.currentContext), Tracer.ParentSpan)
  if (Option.isSome(span)) {
    record["trace_id"] = span.value.traceId
    record["span_id"] = span.value.spanId
  }
  for (const [key, value] of HashMap.toEntries(options.annotations)) {
    if (!(key in record)) record[key] = scrub(value)
  }
  const now = options.date.getTime()
  if (List.isCons(options.spans)) {
    const spans: Record<string, number> = {}
    for (const s of options.spans) spans[s.label] = now - s.startTime
    record["spans"] = spans
  }
  if (!Cause.isEmpty(options.cause)) {
    record["cause"] = scrubString(Cause.pretty(options.cause, { renderErrorCause: true }))
  }
  return record
}

/** JSON lines on stderr. */
export const jsonLogger: Logger.Logger<unknown, void> = Logger.make((options) => {
  process.stderr.write(`${JSON.stringify(formatRecord(options))}\n`)
})

/** A logger that collects records in memory (tests: assert on fields, search for secrets). */
export const makeCapture = () => {
  const records: Array<Record<string, unknown>> = []
  const logger = Logger.make((options) => {
    records.push(formatRecord(options))
  })
  return { records, layer: Logger.replace(Logger.defaultLogger, logger) }
}

export class Logging {
  /** JSON (or pretty) logger on stderr with level from `FLEXPRICE_LOG_LEVEL`. */
  static readonly layer: Layer.Layer<never> = Layer.unwrapEffect(
    Effect.gen(function*() {
      const level = yield* Effect.orDie(LogLevelConfig)
      const format = yield* Config.string("FLEXPRICE_LOG_FORMAT").pipe(Config.withDefault("json"), Effect.orDie)
      const logger = format === "pretty"
        ? Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true }))
        : Logger.replace(Logger.defaultLogger, jsonLogger)
      return Layer.merge(logger, Logger.minimumLogLevel(level))
    })
  )

  /** Explicit level, JSON on stderr. */
  static readonly layerWith = (level: LogLevel.LogLevel): Layer.Layer<never> =>
    Layer.merge(Logger.replace(Logger.defaultLogger, jsonLogger), Logger.minimumLogLevel(level))
}

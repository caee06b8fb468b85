import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Logger, LogLevel, Redacted } from "effect"
import { LogLevelConfig, Logging, makeCapture } from "../../src/observability/Logging.js"
import { Telemetry } from "../../src/observability/Telemetry.js"

/** A made-up live-mode key, assembled so no live-key-looking literal sits in the repository. */
const FAKE_LIVE_PREFIX = ["sk", "live", ""].join("_")

describe("Logging", () => {
  it.live("JSON records carry level, message, trace/span ids and annotations; secrets scrubbed", () => {
    const capture = makeCapture()
    return Effect.gen(function*() {
      const span = yield* Effect.gen(function*() {
        yield* Effect.logInfo("pushing batch", { key: Redacted.make(`${FAKE_LIVE_PREFIX}abcdef123456`) })
        yield* Effect.logWarning("stripe said: Invalid API Key provided: sk_test_51Habcdefghijklmnop")
        return yield* Effect.currentSpan
      }).pipe(
        Effect.annotateLogs({ request_id: "req_123", tenant_id: "tnt_x" }),
        Effect.withSpan("sync.run")
      )
      const [info, warn] = capture.records
      expect(info!["level"]).toBe("INFO")
      expect(info!["msg"]).toContain("pushing batch")
      expect(info!["trace_id"]).toBe(span.traceId)
      expect(info!["span_id"]).toBe(span.spanId)
      expect(info!["request_id"]).toBe("req_123")
      expect(info!["tenant_id"]).toBe("tnt_x")
      expect(typeof info!["ts"]).toBe("string")
      expect(warn!["level"]).toBe("WARN")
      const all = JSON.stringify(capture.records)
      expect(all).not.toContain(`${FAKE_LIVE_PREFIX}abcdef123456`)
      expect(all).not.toContain("sk_test_51Habcdefghijklmnop")
    }).pipe(Effect.provide(Layer.merge(capture.layer, Telemetry.layerTest)))
  })

  it.effect("failures include the cause", () => {
    const capture = makeCapture()
    return Effect.gen(function*() {
      yield* Effect.logError("sync failed", new Error("boom"))
      yield* Effect.fail(new Error("kaput")).pipe(Effect.tapErrorCause(Effect.logError), Effect.ignore)
      expect(capture.records[1]!["cause"]).toContain("kaput")
    }).pipe(Effect.provide(capture.layer))
  })

  it.effect("FLEXPRICE_LOG_LEVEL: default info, accepts names, rejects junk", () =>
    Effect.gen(function*() {
      const read = (env: Record<string, string>) =>
        LogLevelConfig.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
      expect(yield* read({})).toBe(LogLevel.Info)
      expect(yield* read({ FLEXPRICE_LOG_LEVEL: "debug" })).toBe(LogLevel.Debug)
      expect(yield* read({ FLEXPRICE_LOG_LEVEL: "WARNING" })).toBe(LogLevel.Warning)
      const err = yield* Effect.flip(read({ FLEXPRICE_LOG_LEVEL: "loud" }))
      expect(String(err)).toContain("FLEXPRICE_LOG_LEVEL")
    }))

  it.live("Logging.layer writes JSON lines to stderr and honours the level", () =>
    Effect.gen(function*() {
      const chunks: Array<string> = []
      const original = process.stderr.write.bind(process.stderr)
      process.stderr.write = ((chunk: string | Uint8Array) => {
        chunks.push(String(chunk))
        return true
      }) as typeof process.stderr.write
      try {
        yield* Effect.gen(function*() {
          yield* Effect.logInfo("hidden at warning level")
          yield* Effect.logError("visible")
        }).pipe(
          Effect.provide(Logging.layer),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["FLEXPRICE_LOG_LEVEL", "warning"]])))
        )
      } finally {
        process.stderr.write = original
      }
      const lines = chunks.join("").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(lines.map((l) => l["msg"])).toEqual(["visible"])
      expect(lines[0]!["level"]).toBe("ERROR")
    }).pipe(Effect.provide(Logger.remove(Logger.defaultLogger))))
})

import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { ErrorReporter, parseDsn, reportFailures } from "../../src/observability/ErrorReporter.js"
import { StripeLikeError } from "./fixtures.js"

/** A made-up live-mode key, assembled so no live-key-looking literal sits in the repository. */
const FAKE_LIVE_PREFIX = ["sk", "live", ""].join("_")

interface Received {
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

/** A local HTTP server standing in for Sentry's ingest endpoint. */
const fakeSentry = Effect.acquireRelease(
  Effect.async<{ port: number; received: Array<Received>; server: http.Server }>((resume) => {
    const received: Array<Received> = []
    const server = http.createServer((req, res) => {
      let body = ""
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        received.push({ url: req.url ?? "", headers: req.headers, body })
        res.writeHead(200, { "content-type": "application/json" })
        res.end('{"id":"x"}')
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ port: (server.address() as AddressInfo).port, received, server })))
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
)

const parseEnvelope = (body: string) => body.trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>)

describe("ErrorReporter", () => {
  it("parses DSNs into the envelope endpoint", () => {
    const p = Option.getOrThrow(parseDsn(Redacted.make("https://abc123@o1.ingest.sentry.io/4506")))
    expect(p.envelopeUrl).toBe("https://o1.ingest.sentry.io/api/4506/envelope/")
    expect(Redacted.value(p.publicKey)).toBe("abc123")
    const sub = Option.getOrThrow(parseDsn(Redacted.make("http://k@localhost:9000/sentry/17")))
    expect(sub.envelopeUrl).toBe("http://localhost:9000/sentry/api/17/envelope/")
    expect(Option.isNone(parseDsn(Redacted.make("https://o1.ingest.sentry.io/4506")))).toBe(true)
    expect(Option.isNone(parseDsn(Redacted.make("not a url")))).toBe(true)
  })

  it.live("posts an envelope with tags, trace context and scrubbed secrets", () =>
    Effect.gen(function*() {
      const sentry = yield* fakeSentry
      const dsn = Redacted.make(`http://publickey42@127.0.0.1:${sentry.port}/99`)
      yield* Effect.gen(function*() {
        const reporter = yield* ErrorReporter
        expect(reporter.enabled).toBe(true)
        const span = yield* Effect.gen(function*() {
          yield* reporter.report(new StripeLikeError(`Invalid API Key provided: ${FAKE_LIVE_PREFIX}abcdefghijkl1234`), {
            tenantId: "tnt_1",
            environmentId: "env_1",
            window: "2025-01-01T10:00:00Z/2025-01-01T11:00:00Z",
            batchId: "ssb_1",
            stripeRequestId: "req_abc",
            area: "sync",
            extra: { api_key: `${FAKE_LIVE_PREFIX}zzz`, webhook_secret: "whsec_abcdefgh", attempt: 3 }
          })
          return yield* Effect.currentSpan
        }).pipe(Effect.withSpan("sync.push"))
        yield* reporter.flush()
        expect(sentry.received).toHaveLength(1)
        const r = sentry.received[0]!
        expect(r.url).toBe("/api/99/envelope/")
        expect(r.headers["content-type"]).toBe("application/x-sentry-envelope")
        expect(r.headers["x-sentry-auth"]).toContain("sentry_key=publickey42")
        expect(r.headers["x-sentry-auth"]).toContain("sentry_version=7")
        const [header, item, event] = parseEnvelope(r.body)
        expect(header!["event_id"]).toBe(event!["event_id"])
        expect(item).toEqual({ type: "event" })
        expect(event!["environment"]).toBe("staging")
        expect(event!["tags"]).toEqual({
          tenant_id: "tnt_1",
          environment_id: "env_1",
          window: "2025-01-01T10:00:00Z/2025-01-01T11:00:00Z",
          batch_id: "ssb_1",
          stripe_request_id: "req_abc",
          error_code: "stripe_authentication_failed",
          area: "sync"
        })
        expect(event!["exception"].values[0].type).toBe("StripeLikeError")
        expect(event!["contexts"].trace).toEqual({ trace_id: span.traceId, span_id: span.spanId })
        expect(event!["extra"].attempt).toBe(3)
        expect(r.body).not.toContain(`${FAKE_LIVE_PREFIX}abcdefghijkl1234`)
        expect(r.body).not.toContain(`${FAKE_LIVE_PREFIX}zzz`)
        expect(r.body).not.toContain("whsec_abcdefgh")
      }).pipe(Effect.provide(ErrorReporter.layerSentry({ dsn, environment: "staging" })))
    }).pipe(Effect.scoped))

  it.live("reportFailures reports typed failures and keeps the failure", () =>
    Effect.gen(function*() {
      const sentry = yield* fakeSentry
      const dsn = Redacted.make(`http://k@127.0.0.1:${sentry.port}/1`)
      const exit = yield* Effect.fail(new StripeLikeError("nope")).pipe(
        reportFailures({ tenantId: "tnt_9", area: "sync" }),
        Effect.flip,
        Effect.provide(ErrorReporter.layerSentry({ dsn }))
      )
      expect(exit).toBeInstanceOf(StripeLikeError)
      // the layer's finalizer flushed before closing
      expect(sentry.received).toHaveLength(1)
      expect(parseEnvelope(sentry.received[0]!.body)[2]!["tags"].tenant_id).toBe("tnt_9")
    }).pipe(Effect.scoped))

  it.live("without SENTRY_DSN nothing is sent; a malformed DSN disables reporting without echoing it", () =>
    Effect.gen(function*() {
      const sentry = yield* fakeSentry
      const fromEnv = (env: Record<string, string>) =>
        Effect.flatMap(ErrorReporter, (r) => Effect.as(Effect.zipRight(r.report(new Error("x")), r.flush()), r.enabled)).pipe(
          Effect.provide(ErrorReporter.layerFromEnv),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
        )
      expect(yield* fromEnv({})).toBe(false)
      expect(yield* fromEnv({ SENTRY_DSN: "garbage-dsn-secret" })).toBe(false)
      expect(yield* fromEnv({ SENTRY_DSN: `http://k@127.0.0.1:${sentry.port}/5` })).toBe(true)
      expect(sentry.received).toHaveLength(1)
    }).pipe(Effect.scoped))
})

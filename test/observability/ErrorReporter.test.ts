import { describe, expect, it } from "@effect/vitest"
import { createTransport, parseEnvelope, type BaseTransportOptions, type Envelope, type Event } from "@sentry/core"
import { ConfigProvider, Effect, Logger, Option, Redacted } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { ErrorReporter, parseDsn, reportFailures } from "../../src/observability/ErrorReporter.js"
import { StripeLikeError } from "./fixtures.js"

/** Made-up secrets, assembled so no key-looking literal sits in the repository. */
const TEST_KEY = ["sk", "test", "51FakeKeyForScrubbing0000"].join("_")
const LIVE_KEY = ["sk", "live", "zzzzFakeLive"].join("_")
const WEBHOOK_SECRET = ["whsec", "FakeSigningSecret1234"].join("_")

const DSN = Redacted.make("https://publickey42@o1.ingest.sentry.example/99")

/**
 * A fake for the SDK's `transport` option: the SDK's own `createTransport` (rate limits, buffer,
 * flush) with a request executor that records the serialised envelope instead of sending it.
 * `delayMs` makes delivery slow, to prove `flush` and the layer's release wait for it.
 */
const recordingTransport = (delayMs = 0) => {
  const bodies: Array<string> = []
  const urls: Array<string> = []
  const transport = (options: BaseTransportOptions) =>
    createTransport(options, async (request) => {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs))
      urls.push(options.url)
      bodies.push(typeof request.body === "string" ? request.body : new TextDecoder().decode(request.body))
      return { statusCode: 200 }
    })
  const events = () =>
    bodies.map((b) => {
      const [, items] = parseEnvelope(b) as Envelope
      const [itemHeader, payload] = items[0]!
      expect(itemHeader.type).toBe("event")
      return payload as Event
    })
  return { transport, bodies, urls, events }
}

describe("ErrorReporter (Sentry SDK)", () => {
  it("validates and normalises DSNs; shapes the SDK would print are rejected", () => {
    const ok = (s: string) => Option.map(parseDsn(Redacted.make(s)), Redacted.value)
    expect(ok(" https://abc123@o1.ingest.sentry.io/4506 ")).toEqual(Option.some("https://abc123@o1.ingest.sentry.io/4506"))
    expect(ok("http://k@localhost:9000/sentry/17")).toEqual(Option.some("http://k@localhost:9000/sentry/17"))
    expect(Option.isNone(ok("https://o1.ingest.sentry.io/4506"))).toBe(true) // no key
    expect(Option.isNone(ok("https://k-1@o1.ingest.sentry.io/4506"))).toBe(true) // key the SDK cannot parse
    expect(Option.isNone(ok("https://k@o1.ingest.sentry.io/proj"))).toBe(true)
    expect(Option.isNone(ok("ftp://k@o1.ingest.sentry.io/1"))).toBe(true)
    expect(Option.isNone(ok("not a url"))).toBe(true)
  })

  it.live("an error arrives as an envelope with tags and trace context, and no secret", () =>
    Effect.gen(function*() {
      const fake = recordingTransport()
      yield* Effect.gen(function*() {
        const reporter = yield* ErrorReporter
        expect(reporter.enabled).toBe(true)
        const span = yield* Effect.gen(function*() {
          yield* reporter.report(new StripeLikeError(`Invalid API Key provided: ${TEST_KEY}`), {
            tenantId: "tnt_1",
            environmentId: "env_1",
            window: "2025-01-01T10:00:00Z/2025-01-01T11:00:00Z",
            batchId: "ssb_1",
            stripeRequestId: "req_abc",
            area: "sync",
            extra: {
              api_key: LIVE_KEY,
              webhook_secret: WEBHOOK_SECRET,
              note: `signed with ${WEBHOOK_SECRET} using ${TEST_KEY}`,
              encryption: Redacted.make("raw-master-key"),
              attempt: 3
            }
          })
          return yield* Effect.currentSpan
        }).pipe(Effect.withSpan("sync.push"))
        yield* reporter.flush()
        expect(fake.bodies).toHaveLength(1)
        // The SDK authenticates with the DSN's public key on the envelope endpoint.
        expect(fake.urls[0]).toMatch(/^https:\/\/o1\.ingest\.sentry\.example\/api\/99\/envelope\/\?.*sentry_key=publickey42/)
        const [event] = fake.events()
        expect(event!["environment"]).toBe("staging")
        expect(event!["level"]).toBe("error")
        expect(event!["platform"]).toBe("node")
        expect(event!["tags"]).toEqual({
          tenant_id: "tnt_1",
          environment_id: "env_1",
          window: "2025-01-01T10:00:00Z/2025-01-01T11:00:00Z",
          batch_id: "ssb_1",
          stripe_request_id: "req_abc",
          error_code: "stripe_authentication_failed",
          area: "sync"
        })
        const exception = event!.exception?.values?.at(-1)
        expect(exception?.type).toBe("StripeLikeError")
        expect(exception?.value).toBe("Invalid API Key provided: [Filtered]")
        expect(exception?.stacktrace?.frames?.length).toBeGreaterThan(0)
        expect(event!.contexts?.["trace"]).toMatchObject({ trace_id: span.traceId, span_id: span.spanId })
        expect(event!["extra"]).toEqual({
          api_key: "[Filtered]",
          webhook_secret: "[Filtered]",
          note: "signed with [Filtered] using [Filtered]",
          encryption: "[Filtered]",
          attempt: 3
        })
        const wire = fake.bodies.join("\n")
        for (const secret of [TEST_KEY, LIVE_KEY, WEBHOOK_SECRET, "raw-master-key", "whsec_", "sk_test_", "sk_live_"]) {
          expect(wire).not.toContain(secret)
        }
      }).pipe(Effect.provide(ErrorReporter.layerSentry({ dsn: DSN, environment: "staging", transport: fake.transport })))
    }))

  it.live("reportFailures reports typed failures, keeps the failure, and the layer's release waits for delivery", () =>
    Effect.gen(function*() {
      const fake = recordingTransport(150)
      const failure = yield* Effect.fail(new StripeLikeError("nope")).pipe(
        reportFailures({ tenantId: "tnt_9", area: "sync" }),
        Effect.flip,
        Effect.provide(ErrorReporter.layerSentry({ dsn: DSN, transport: fake.transport }))
      )
      expect(failure).toBeInstanceOf(StripeLikeError)
      expect(fake.bodies).toHaveLength(1)
      expect(fake.events()[0]!["tags"]).toMatchObject({ tenant_id: "tnt_9", error_code: "stripe_authentication_failed" })
    }))

  it.live("interruptions are not reported", () =>
    Effect.gen(function*() {
      const fake = recordingTransport()
      yield* Effect.interrupt.pipe(
        reportFailures({ area: "sync" }),
        Effect.exit,
        Effect.provide(ErrorReporter.layerSentry({ dsn: DSN, transport: fake.transport }))
      )
      expect(fake.bodies).toHaveLength(0)
    }))

  it.live("the default transport POSTs the envelope with fetch", () =>
    Effect.gen(function*() {
      const received: Array<{ url: string; contentType: string | undefined; body: string }> = []
      const server = yield* Effect.acquireRelease(
        Effect.async<http.Server>((resume) => {
          const s = http.createServer((req, res) => {
            let body = ""
            req.on("data", (c) => (body += c))
            req.on("end", () => {
              received.push({ url: req.url ?? "", contentType: req.headers["content-type"], body })
              res.writeHead(200, { "content-type": "application/json" })
              res.end('{"id":"x"}')
            })
          })
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
      )
      const port = (server.address() as AddressInfo).port
      yield* Effect.flatMap(ErrorReporter, (r) => Effect.zipRight(r.report(new StripeLikeError(`bad ${TEST_KEY}`), { batchId: "ssb_2" }), r.flush())).pipe(
        Effect.provide(ErrorReporter.layerSentry({ dsn: Redacted.make(`http://pk7@127.0.0.1:${port}/5`) }))
      )
      expect(received).toHaveLength(1)
      expect(received[0]!.url).toMatch(/^\/api\/5\/envelope\/\?.*sentry_key=pk7/)
      expect(received[0]!.contentType).toBe("application/x-sentry-envelope")
      expect(received[0]!.body).toContain('"batch_id":"ssb_2"')
      expect(received[0]!.body).not.toContain(TEST_KEY)
    }).pipe(Effect.scoped))

  it.live("layerFromEnv: no SENTRY_DSN → disabled; a malformed DSN disables reporting without echoing it", () =>
    Effect.gen(function*() {
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => logs.push(JSON.stringify(message)))
      const fromEnv = (env: Record<string, string>) =>
        Effect.map(ErrorReporter, (r) => r.enabled).pipe(
          Effect.provide(ErrorReporter.layerFromEnv),
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
          Effect.provide(Logger.replace(Logger.defaultLogger, logger))
        )
      expect(yield* fromEnv({})).toBe(false)
      expect(yield* fromEnv({ SENTRY_DSN: "  " })).toBe(false)
      expect(yield* fromEnv({ SENTRY_DSN: "https://garbage-dsn-secret@sentry.example/x" })).toBe(false)
      expect(logs.join("\n")).toContain("SENTRY_DSN is not a valid DSN")
      expect(logs.join("\n")).not.toContain("garbage-dsn-secret")
      expect(yield* fromEnv({ SENTRY_DSN: "http://k@127.0.0.1:9/5" })).toBe(true)
    }))
})

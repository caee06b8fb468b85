/**
 * A stand-in Sentry ingest endpoint on loopback for `layer(…)` suites: the service under test gets
 * its DSN (SENTRY_DSN) and the test reads what the SDK sent (`SentryEnvelopes`). The endpoint is
 * opened in the layer's scope and closed with it, after the service that reports to it.
 */
import { Context, Effect, Layer } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

/** One request the stand-in received: its path (with the SDK's `sentry_key` query) and body. */
export interface SentryEnvelope {
  readonly path: string
  readonly body: string
}

/** The requests the stand-in Sentry received, in order (the SDK sends in the background). */
export class SentryEnvelopes extends Context.Tag("test/SentryEnvelopes")<SentryEnvelopes, ReadonlyArray<SentryEnvelope>>() {}

/**
 * `app(dsn)` (the service, given SENTRY_DSN = `dsn`) beside `SentryEnvelopes`, with the stand-in
 * listening on 127.0.0.1 for the layer's lifetime; `project` is the DSN's project id.
 */
export const withSentry = <A, E, R>(project: number, app: (dsn: string) => Layer.Layer<A, E, R>) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const envelopes: Array<SentryEnvelope> = []
      const server = yield* Effect.acquireRelease(
        Effect.async<http.Server>((resume) => {
          const s = http.createServer((req, res) => {
            let body = ""
            req.on("data", (d) => (body += d))
            req.on("end", () => {
              envelopes.push({ path: req.url ?? "", body })
              res.writeHead(200, { "content-type": "application/json" })
              res.end("{}")
            })
          })
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
      )
      const dsn = `http://publickey@127.0.0.1:${(server.address() as AddressInfo).port}/${project}`
      return Layer.merge(app(dsn), Layer.succeed(SentryEnvelopes, envelopes))
    })
  )

/**
 * Trace context continues into Stripe: every request the Stripe client makes carries a W3C
 * `traceparent` naming the caller's trace (the SDK itself knows nothing of our spans).
 */
import { Effect, Redacted } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { StripeClient } from "../../src/stripe/StripeClient.js"
import { emulatorSettings } from "../../src/stripe/StripeSettings.js"

let server: http.Server
let url = ""
const seen: Array<http.IncomingHttpHeaders> = []

beforeAll(async () => {
  server = http.createServer((req, res) => {
    seen.push(req.headers)
    res.writeHead(200, { "content-type": "application/json", "request-id": "req_trace" })
    res.end(JSON.stringify({ id: "acct_trace", object: "account" }))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

describe("trace propagation into Stripe calls", () => {
  it("sends the current trace id in traceparent", async () => {
    const ref = { tenantKey: "tnt_trace/env_trace", apiKey: Redacted.make("sk_test_trace_123456"), livemode: false }
    const traceId = await Effect.runPromise(
      Effect.gen(function* () {
        const client = yield* StripeClient
        const span = yield* Effect.currentSpan
        yield* client.retrieveAccount(ref)
        return span.traceId
      }).pipe(Effect.withSpan("caller"), Effect.provide(StripeClient.layerWith(emulatorSettings(url))), Effect.scoped)
    )
    const header = seen.at(-1)?.["traceparent"]
    expect(header).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
    expect(String(header).split("-")[1]).toBe(traceId)
  })
})

/**
 * A batch Stripe refuses for good (here: v1 transport, the Stripe customer was deleted) is
 * `failed` in the ledger and reported to Sentry with tenant, environment, window, batch and
 * Stripe's request id — never the key.
 */
import { layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { expect } from "vitest"
import { TestTenant } from "../support/TestApp.js"
import { hoursAgo, STRIPE_KEY } from "../sync/support.js"
import { batches, configure, customer, ingest, meter, sync, SyncEmulator, syncLayer } from "../sync/syncLayer.js"

/** The envelopes a stand-in Sentry on loopback received, in order. */
class SentryEnvelopes extends Context.Tag("test/SentryEnvelopes")<SentryEnvelopes, ReadonlyArray<string>>() {}

/** A stand-in Sentry ingest endpoint (closed with the layer), and the service reporting to it. */
const withSentry = Layer.unwrapScoped(
  Effect.gen(function* () {
    const envelopes: Array<string> = []
    const server = yield* Effect.acquireRelease(
      Effect.async<http.Server>((resume) => {
        const s = http.createServer((req, res) => {
          let body = ""
          req.on("data", (d) => (body += d))
          req.on("end", () => {
            envelopes.push(body)
            res.end("{}")
          })
        })
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
    )
    const dsn = `http://publickey@127.0.0.1:${(server.address() as AddressInfo).port}/7`
    return Layer.merge(syncLayer({ env: { SENTRY_DSN: dsn } }), Layer.succeed(SentryEnvelopes, envelopes))
  })
)

layer(withSentry, { excludeTestServices: true })("Sentry reporting of failed sync batches", (it) => {
  it.effect("reports the failed batch with its context", () =>
    Effect.gen(function* () {
      yield* configure({ transport: "v1" })
      const m = yield* meter("calls", { aggregation: "COUNT" })
      const c = yield* customer("gone")
      yield* Effect.flatMap(SyncEmulator, (e) => e.deleteCustomer(c.stripeId))
      yield* ingest([{ event_id: "s1", event_name: m.eventName, external_customer_id: "gone", timestamp: hoursAgo(2) }])
      const report = yield* sync()
      expect(report.batchesFailed).toBe(1)
      const [batch] = (yield* batches).filter((b) => b.syncStatus === "failed")
      expect(batch).toBeDefined()
      // the SDK sends in the background: wait until an envelope arrived (5 s at most)
      const envelopes = yield* SentryEnvelopes
      for (let i = 0; i < 50 && envelopes.length === 0; i++) yield* Effect.sleep("100 millis")
      expect(envelopes.length).toBeGreaterThan(0)
      const body = envelopes.join("\n")
      const { scope } = yield* TestTenant
      expect(body).toContain(scope.tenantId)
      expect(body).toContain(scope.environmentId)
      expect(body).toContain(batch!.id)
      expect(body).toContain(batch!.windowStart.toISOString())
      expect(body).not.toContain(STRIPE_KEY)
    })
  )
})

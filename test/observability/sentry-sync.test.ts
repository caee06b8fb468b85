/**
 * A batch Stripe refuses for good (here: v1 transport, the Stripe customer was deleted) is
 * `failed` in the ledger and reported to Sentry with tenant, environment, window, batch and
 * Stripe's request id — never the key.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { SentryEnvelopes, withSentry } from "../support/sentry.js"
import { TestTenant } from "../support/TestApp.js"
import { hoursAgo, STRIPE_KEY } from "../sync/support.js"
import { batches, configure, customer, ingest, meter, sync, SyncEmulator, syncLayer } from "../sync/syncLayer.js"

/** The service reporting to a stand-in Sentry (test/support/sentry.ts). */
const reported = withSentry(7, (dsn) => syncLayer({ env: { SENTRY_DSN: dsn } }))

layer(reported, { excludeTestServices: true })("Sentry reporting of failed sync batches", (it) => {
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
      const body = envelopes.map((e) => e.body).join("\n")
      const { scope } = yield* TestTenant
      expect(body).toContain(scope.tenantId)
      expect(body).toContain(scope.environmentId)
      expect(body).toContain(batch!.id)
      expect(body).toContain(batch!.windowStart.toISOString())
      expect(body).not.toContain(STRIPE_KEY)
    })
  )
})

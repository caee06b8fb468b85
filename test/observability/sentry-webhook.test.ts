/**
 * With SENTRY_DSN set, a Stripe-integration failure (here: a webhook whose processing fails
 * because the database lost a table) reaches Sentry as an envelope carrying the tenant,
 * environment and error code — and never the Stripe key or webhook secret.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { SentryEnvelopes, withSentry } from "../support/sentry.js"
import { TestTenant } from "../support/TestApp.js"
import { API_KEY, configuredLayer, Emulator, rows, WEBHOOK_SECRET } from "../webhooks/support.js"

layer(withSentry(42, (dsn) => configuredLayer("pglite", { SENTRY_DSN: dsn })), { excludeTestServices: true })("Sentry reporting of integration failures", (it) => {
  it.effect("sends a webhook processing failure with tenant context", () =>
    Effect.gen(function* () {
      const emulator = yield* Emulator
      // the mapping table gone while the delivery is processed, put back whatever happens
      yield* Effect.acquireUseRelease(
        rows("ALTER TABLE customer_integration_mappings RENAME TO customer_integration_mappings_away"),
        () =>
          Effect.gen(function* () {
            yield* emulator.createCustomer({ metadata: { external_id: "sentry-1" } })
            yield* emulator.deliveries.flush
          }),
        () => Effect.orDie(rows("ALTER TABLE customer_integration_mappings_away RENAME TO customer_integration_mappings"))
      )
      expect(emulator.deliveries.log().at(-1)?.status).toBe(500)
      // the SDK sends in the background: wait until an envelope arrived (5 s at most)
      const envelopes = yield* SentryEnvelopes
      for (let i = 0; i < 50 && envelopes.length === 0; i++) yield* Effect.sleep("100 millis")
      expect(envelopes.length).toBeGreaterThan(0)
      const { path, body } = envelopes[0]!
      // The SDK authenticates in the query string (`sentry_key=<public key>`).
      expect(path).toMatch(/^\/api\/42\/envelope\/\?.*sentry_key=publickey/)
      const { scope } = yield* TestTenant
      expect(body).toContain(scope.tenantId)
      expect(body).toContain(scope.environmentId)
      expect(body).toContain("webhook_processing_failed")
      expect(body).not.toContain(API_KEY)
      expect(body).not.toContain(WEBHOOK_SECRET)
    })
  )
})

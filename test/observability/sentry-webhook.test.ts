/**
 * With SENTRY_DSN set, a Stripe-integration failure (here: a webhook whose processing fails
 * because the database lost a table) reaches Sentry as an envelope carrying the tenant,
 * environment and error code — and never the Stripe key or webhook secret.
 */
import { Effect } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { API_KEY, configure, startHarness, WEBHOOK_SECRET, type Harness } from "../webhooks/support.js"

describe("Sentry reporting of integration failures", () => {
  let sentry: http.Server
  const envelopes: Array<{ path: string; body: string }> = []
  let h: Harness
  beforeAll(async () => {
    sentry = http.createServer((req, res) => {
      let body = ""
      req.on("data", (d) => (body += d))
      req.on("end", () => {
        envelopes.push({ path: req.url ?? "", body })
        res.writeHead(200, { "content-type": "application/json" })
        res.end("{}")
      })
    })
    await new Promise<void>((resolve) => sentry.listen(0, "127.0.0.1", resolve))
    const port = (sentry.address() as AddressInfo).port
    h = await startHarness("pglite", { SENTRY_DSN: `http://publickey@127.0.0.1:${port}/42` })
    await configure(h)
  })
  afterAll(async () => {
    await h?.close()
    await new Promise<void>((resolve) => sentry.close(() => resolve()))
  })

  it("sends a webhook processing failure with tenant context", async () => {
    await h.sql("ALTER TABLE customer_integration_mappings RENAME TO customer_integration_mappings_away")
    try {
      await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "sentry-1" } }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      expect(h.emulator.deliveries.log().at(-1)?.status).toBe(500)
    } finally {
      await h.sql("ALTER TABLE customer_integration_mappings_away RENAME TO customer_integration_mappings")
    }
    for (let i = 0; i < 50 && envelopes.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
    expect(envelopes.length).toBeGreaterThan(0)
    const { path, body } = envelopes[0]!
    // The SDK authenticates in the query string (`sentry_key=<public key>`).
    expect(path).toMatch(/^\/api\/42\/envelope\/\?.*sentry_key=publickey/)
    expect(body).toContain(h.app.scope.tenantId)
    expect(body).toContain(h.app.scope.environmentId)
    expect(body).toContain("webhook_processing_failed")
    expect(body).not.toContain(API_KEY)
    expect(body).not.toContain(WEBHOOK_SECRET)
  })
})

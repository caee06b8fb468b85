/**
 * A batch Stripe refuses for good (here: v1 transport, the Stripe customer was deleted) is
 * `failed` in the ledger and reported to Sentry with tenant, environment, window, batch and
 * Stripe's request id — never the key.
 */
import { Effect } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { hoursAgo, startSyncHarness, STRIPE_KEY, type SyncHarness } from "../sync/support.js"

describe("Sentry reporting of failed sync batches", () => {
  let sentry: http.Server
  const envelopes: Array<string> = []
  let h: SyncHarness
  beforeAll(async () => {
    sentry = http.createServer((req, res) => {
      let body = ""
      req.on("data", (d) => (body += d))
      req.on("end", () => {
        envelopes.push(body)
        res.end("{}")
      })
    })
    await new Promise<void>((resolve) => sentry.listen(0, "127.0.0.1", resolve))
    h = await startSyncHarness({ env: { SENTRY_DSN: `http://publickey@127.0.0.1:${(sentry.address() as AddressInfo).port}/7` } })
  })
  afterAll(async () => {
    await h?.dispose()
    await new Promise<void>((resolve) => sentry.close(() => resolve()))
  })

  it("reports the failed batch with its context", async () => {
    await h.configure({ transport: "v1" })
    const m = await h.meter("calls", { aggregation: "COUNT" })
    const c = await h.customer("gone")
    await Effect.runPromise(h.emulator.deleteCustomer(c.stripeId!))
    await h.ingest([{ event_id: "s1", event_name: m.eventName, external_customer_id: "gone", timestamp: hoursAgo(2) }])
    const report = await h.sync()
    expect(report.batchesFailed).toBe(1)
    const [batch] = (await h.batches()).filter((b) => b.syncStatus === "failed")
    expect(batch).toBeDefined()
    for (let i = 0; i < 50 && envelopes.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
    expect(envelopes.length).toBeGreaterThan(0)
    const body = envelopes.join("\n")
    expect(body).toContain(h.scope.tenantId)
    expect(body).toContain(h.scope.environmentId)
    expect(body).toContain(batch!.id)
    expect(body).toContain(batch!.windowStart.toISOString())
    expect(body).not.toContain(STRIPE_KEY)
  })
})

/**
 * Issue #12 item 9: a rolled key or a refused stream request must not burn batches' retry cap.
 *
 * - A Stripe authentication failure (the emulator's rolled key answers 401 `api_key_expired`,
 *   https://docs.stripe.com/keys#rolling-keys) pauses the tenant's push: no attempt is charged,
 *   the status says why, and the push resumes once the configuration changes.
 * - A stream request Stripe refuses as a whole (400: one invalid event refuses the request,
 *   https://docs.stripe.com/api/v2/billing/meter-event-stream/create) is not charged to every
 *   batch of the chunk: the chunk is split until the refused batch is alone.
 *
 * Expected totals come from the raw events (test/support/oracle.ts).
 */
import { Effect, Layer } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { Telemetry, TelemetryTest, type TelemetryTestService } from "../../src/observability/Telemetry.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { expectTotals, hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

/** FLEXPRICE_SYNC_MAX_RETRIES default: runs after which a failed batch is left alone. */
const RETRY_CAP = 5

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`auth failures and refused requests on ${backend}`, () => {
    let h: SyncHarness | undefined
    afterEach(async () => {
      await h?.dispose()
      h = undefined
    })

    for (const transport of ["stream", "v1"] as const) {
      it(`a rolled key pauses the ${transport} push without charging attempts; a new key resumes it exactly`, async () => {
        let telemetry: TelemetryTestService | undefined
        const capture = Layer.effectDiscard(Effect.map(TelemetryTest, (t) => void (telemetry = t)))
        h = await startSyncHarness({ backend, extra: capture.pipe(Layer.provide(Telemetry.layerTest)) })
        // the StripeAuthenticationFailures alert reads this counter (metrics are process-global: compare)
        const authErrors = () =>
          Effect.runPromise(telemetry!.metricValue("flexprice_errors_total", { code: "stripe_authentication_failed", area: "sync" }))
        await h.configure({ transport })
        const m = await h.meter("calls", { aggregation: "SUM", field: "q" })
        const customers = [await h.customer("a"), await h.customer("b"), await h.customer("c")]
        const expected = new Map<string, Array<string>>()
        const events: Array<Record<string, unknown>> = []
        let n = 0
        for (const [i, c] of customers.entries())
          for (const hour of [3, 2]) {
            const q = `${i + 1}.${hour}5`
            events.push({ event_id: `e${n++}`, event_name: "calls", external_customer_id: ["a", "b", "c"][i], timestamp: hoursAgo(hour, 7), properties: { q } })
            const k = `${c.stripeId}|${m.stripeEventName}`
            expected.set(k, [...(expected.get(k) ?? []), q])
          }
        // the first hour is synced with the working key (the run reads the Stripe meter too)
        await h.ingest(events.filter((_, i) => i % 2 === 0))
        expect((await h.sync()).status).toBe("completed")

        const newKey = await Effect.runPromise(h.emulator.rollKey(0))
        // a stream session opened before the roll stays valid to its expiry; expire it so the
        // next request needs a session created with the (now expired) key
        await Effect.runPromise(h.emulator.expireSessions())
        await h.ingest(events.filter((_, i) => i % 2 === 1))
        const runs = []
        for (let i = 0; i < RETRY_CAP + 2; i++) runs.push(await h.sync())
        const open = (await h.batches()).filter((b) => b.syncStatus !== "synced")
        expect(open.length).toBe(3)
        // no attempt charged: the batches wait, they are not failed or capped
        expect(open.map((b) => [b.syncStatus, b.retryCount])).toEqual([
          ["pending", 0],
          ["pending", 0],
          ["pending", 0]
        ])
        expect(runs.every((r) => r.status === "partial" && r.batchesFailed === 0)).toBe(true)
        expect(runs.at(-1)!.error).toBe("sync_paused")
        // the status says why
        const status = await h.app.request("GET", "/v1/stripe/sync/status")
        expect(status.data.paused).toMatchObject({ code: "stripe_authentication_failed" })
        expect(typeof status.data.paused?.since).toBe("string")
        // paused: later runs do not call Stripe's meter event endpoints again, and each counts
        // the pause's code so the alert keeps firing while it lasts
        h.emulator.resetCounters()
        const errorsBefore = await authErrors()
        await h.sync()
        expect((await authErrors()) - errorsBefore).toBe(1)
        const calls = h.emulator.callCounts()
        expect(Object.keys(calls).filter((p) => p.includes("meter_event"))).toEqual([])

        // the fix: a new key through the config API lifts the pause
        const put = await h.app.request("PUT", "/v1/stripe/config", { api_key: newKey })
        expect(put.status).toBe(200)
        expect((await h.app.request("GET", "/v1/stripe/sync/status")).data.paused).toBeNull()
        const after = await h.sync()
        expect(after.status).toBe("completed")
        expect(expectTotals(h, new Map([...expected].map(([k, v]) => [k, O.format(O.sum(v))])))).toEqual([])
      })
    }

    it("a stream request refused as a whole charges only the batch Stripe refused", async () => {
      h = await startSyncHarness({ backend, streamValidation: "sync" })
      await h.configure({ transport: "stream" })
      const m = await h.meter("tokens", { aggregation: "SUM", field: "t" })
      const expected = new Map<string, string>()
      const events: Array<Record<string, unknown>> = []
      for (let i = 0; i < 12; i++) {
        const c = await h.customer(`c${i}`)
        const q = `${i}.5`
        events.push({ event_id: `t${i}`, event_name: "tokens", external_customer_id: `c${i}`, timestamp: hoursAgo(2, 10), properties: { t: q } })
        expected.set(`${c.stripeId}|${m.stripeEventName}`, O.format(O.sum([q])))
      }
      // a customer mapped to a Stripe customer that does not exist: Stripe refuses its event
      const bad = await h.customer("ghost", false)
      await h.asTenant(
        Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId: bad.customerId, providerCustomerId: "cus_DoesNotExist000", source: "api" }))
      )
      events.push({ event_id: "g", event_name: "tokens", external_customer_id: "ghost", timestamp: hoursAgo(2, 11), properties: { t: "99" } })
      await h.ingest(events)

      const first = await h.sync()
      const rows = await h.batches()
      const failed = rows.filter((b) => b.syncStatus === "failed")
      expect(failed.map((b) => [b.customerId, b.retryCount])).toEqual([[bad.customerId, 1]])
      expect(rows.filter((b) => b.syncStatus === "synced").length).toBe(12)
      expect(first.batchesFailed).toBe(1)
      expect(expectTotals(h, expected)).toEqual([])
    })
  })
})

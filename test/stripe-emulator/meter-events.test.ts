import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import Stripe from "stripe"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { API_KEY, nowSec, promise, sdk, stripeError } from "./helpers.js"

const setup = (emu: StripeEmulatorHandle, formula: "sum" | "count" | "last" = "sum") =>
  Effect.gen(function* () {
    const customer = yield* emu.createCustomer({ name: "metered" })
    const meter = yield* emu.createMeter({
      display_name: "API calls",
      event_name: "api_calls",
      default_aggregation: { formula }
    })
    return { customer, meter }
  })

const v1 = (stripe: Stripe, customer: string, value: string, extra: Partial<Stripe.Billing.MeterEventCreateParams> = {}) =>
  stripe.billing.meterEvents.create({
    event_name: "api_calls",
    payload: { stripe_customer_id: customer, value },
    ...extra
  })

const HOUR = 3600

describe("emulator: billing meters", () => {
  it.scopedLive("creates meters with Stripe's defaults, lists them and deactivates", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      const m = yield* promise(() =>
        stripe.billing.meters.create({
          display_name: "Tokens",
          event_name: "tokens",
          default_aggregation: { formula: "sum" },
          customer_mapping: { event_payload_key: "cust", type: "by_id" },
          value_settings: { event_payload_key: "qty" }
        })
      )
      expect(m).toMatchObject({
        object: "billing.meter",
        status: "active",
        event_name: "tokens",
        default_aggregation: { formula: "sum" },
        customer_mapping: { event_payload_key: "cust", type: "by_id" },
        value_settings: { event_payload_key: "qty" }
      })
      const d = yield* promise(() =>
        stripe.billing.meters.create({ display_name: "Calls", event_name: "calls", default_aggregation: { formula: "count" } })
      )
      expect(d.customer_mapping.event_payload_key).toBe("stripe_customer_id")
      expect(d.value_settings.event_payload_key).toBe("value")
      const dup = yield* stripeError(() =>
        stripe.billing.meters.create({ display_name: "Again", event_name: "calls", default_aggregation: { formula: "sum" } })
      )
      expect(dup.statusCode).toBe(400)
      const missing = yield* stripeError(() =>
        stripe.billing.meters.create({ display_name: "x", event_name: "y" } as Stripe.Billing.MeterCreateParams)
      )
      expect(missing.param).toBe("default_aggregation[formula]")

      const listed = yield* promise(() => stripe.billing.meters.list())
      expect(listed.data.map((x) => x.id)).toEqual([d.id, m.id])
      expect((yield* promise(() => stripe.billing.meters.retrieve(m.id))).id).toBe(m.id)

      const off = yield* promise(() => stripe.billing.meters.deactivate(m.id))
      expect(off.status).toBe("inactive")
      expect(off.status_transitions.deactivated_at).toBeTypeOf("number")
      const c = yield* emu.createCustomer({})
      const e = yield* stripeError(() =>
        stripe.billing.meterEvents.create({ event_name: "tokens", payload: { cust: c.id, qty: "1" } })
      )
      expect(e.statusCode).toBe(400)
      expect(e.message).toContain("No active meter")
      const active = yield* promise(() => stripe.billing.meters.list({ status: "active" }))
      expect(active.data.map((x) => x.id)).toEqual([d.id])
    })
  )
})

describe("emulator: v1 meter events", () => {
  it.scopedLive("accepts an event and answers Stripe's meter event object", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const ts = nowSec() - 60
      const ev = yield* promise(() => v1(sdk(emu), customer.id, "12.5", { identifier: "evt-1", timestamp: ts }))
      expect(ev).toEqual({
        object: "billing.meter_event",
        created: expect.any(Number),
        event_name: "api_calls",
        identifier: "evt-1",
        livemode: false,
        payload: { stripe_customer_id: customer.id, value: "12.5" },
        timestamp: ts
      })
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "12.5", count: 1 })
    })
  )

  it.scopedLive("refuses a second event with the same identifier within 24 h, and counts it once", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const stripe = sdk(emu)
      yield* promise(() => v1(stripe, customer.id, "3", { identifier: "batch-1" }))
      const dup = yield* stripeError(() => v1(stripe, customer.id, "3", { identifier: "batch-1" }))
      expect(dup).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError)
      expect(dup.statusCode).toBe(400)
      expect(dup.message).toBe("An event already exists with identifier batch-1.")
      expect(dup.code).toBe("resource_already_exists")
      expect(dup.headers?.["stripe-should-retry"]).toBe("false")
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "3", count: 1 })

      // Past Stripe's 24 h horizon the identifier is free again.
      emu.advanceClock(24 * HOUR * 1000 + 1000)
      yield* promise(() => v1(stripe, customer.id, "3", { identifier: "batch-1" }))
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "6", count: 2 })
    })
  )

  it.scopedLive("keeps timestamps within the past 35 days and at most 5 minutes ahead", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, now: () => 1_800_000_000_000 })
      const { customer } = yield* setup(emu)
      const stripe = sdk(emu)
      const now = 1_800_000_000
      const day = 86400
      const old = yield* stripeError(() => v1(stripe, customer.id, "1", { timestamp: now - 35 * day - 1 }))
      expect(old.code).toBe("timestamp_too_far_in_past")
      expect(old.param).toBe("timestamp")
      const ahead = yield* stripeError(() => v1(stripe, customer.id, "1", { timestamp: now + 301 }))
      expect(ahead.code).toBe("timestamp_in_future")
      yield* promise(() => v1(stripe, customer.id, "1", { timestamp: now - 35 * day }))
      yield* promise(() => v1(stripe, customer.id, "1", { timestamp: now + 300 }))
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "2", count: 2 })
    })
  )

  it.scopedLive("accepts at most 15 significant digits (meter_event_value_too_many_digits), numeric strings only, negatives summed", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const stripe = sdk(emu)
      const accepted = ["123456789012345", "1234567890.12345", "0.000000000000001", "1.10000000000000000", "999999999999999", "-1", "-0.5"]
      for (const ok of accepted) {
        yield* promise(() => v1(stripe, customer.id, ok))
      }
      for (const bad of ["1234567890123456", "1234567890.123456", "0.1000000000000001", "-1234567890123456"]) {
        const e = yield* stripeError(() => v1(stripe, customer.id, bad))
        expect(e.statusCode).toBe(400)
        expect(e.code).toBe("meter_event_value_too_many_digits")
        expect(e.param).toBe("payload[value]")
      }
      for (const bad of ["abc", "1e3", "0x10", " 1", ""]) {
        const e = yield* stripeError(() => v1(stripe, customer.id, bad))
        expect(e.statusCode).toBe(400)
      }
      // Oracle: the accepted values summed as scaled BigInts (18 decimals covers every input).
      const scaled = (v: string) => {
        const neg = v.startsWith("-")
        const [i, f = ""] = v.replace("-", "").split(".")
        const n = BigInt(i!) * 10n ** 18n + BigInt((f + "0".repeat(18)).slice(0, 18))
        return neg ? -n : n
      }
      const total = accepted.map(scaled).reduce((a, b) => a + b, 0n)
      expect(scaled(emu.total(customer.id, "api_calls").sum)).toBe(total)
      expect(emu.total(customer.id, "api_calls").count).toBe(accepted.length)
    })
  )

  it.scopedLive("requires the event name, a known customer and the value key", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const stripe = sdk(emu)
      const noName = yield* stripeError(() =>
        stripe.billing.meterEvents.create({ payload: { stripe_customer_id: customer.id, value: "1" } } as unknown as Stripe.Billing.MeterEventCreateParams)
      )
      expect(noName.param).toBe("event_name")
      const unknown = yield* stripeError(() => v1(stripe, "cus_unknown", "1"))
      expect(unknown.code).toBe("resource_missing")
      const noValue = yield* stripeError(() =>
        stripe.billing.meterEvents.create({ event_name: "api_calls", payload: { stripe_customer_id: customer.id } })
      )
      expect(noValue.param).toBe("payload[value]")
      const noCustomer = yield* stripeError(() =>
        stripe.billing.meterEvents.create({ event_name: "api_calls", payload: { value: "1" } })
      )
      expect(noCustomer.param).toBe("payload[stripe_customer_id]")
      expect(emu.state.meterEvents()).toHaveLength(0)
    })
  )
})

describe("emulator: v2 meter event stream", () => {
  const streamClient = (emu: StripeEmulatorHandle, token: string) =>
    new Stripe(token, { host: emu.host, port: emu.port, protocol: "http", maxNetworkRetries: 0, telemetry: false })

  const events = (customer: string, n: number, prefix: string, value = "1") =>
    Array.from({ length: n }, (_, i) => ({
      event_name: "api_calls",
      identifier: `${prefix}-${i}`,
      timestamp: new Date().toISOString(),
      payload: { stripe_customer_id: customer, value }
    }))

  it.scopedLive("sends 250 events as 3 stream requests under one session", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const session = yield* promise(() => sdk(emu).v2.billing.meterEventSession.create())
      expect(session.object).toBe("v2.billing.meter_event_session")
      expect(Date.parse(session.expires_at) - Date.parse(session.created)).toBe(15 * 60 * 1000)
      const stream = streamClient(emu, session.authentication_token)
      const all = events(customer.id, 250, "e", "0.1")
      for (let i = 0; i < all.length; i += 100) {
        const res = yield* promise(() => stream.v2.billing.meterEventStream.create({ events: all.slice(i, i + 100) }))
        expect(res).toEqual({})
      }
      expect(emu.callCounts()["POST /v2/billing/meter_event_stream"]).toBe(3)
      expect(emu.callCounts()["POST /v2/billing/meter_event_session"]).toBe(1)
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "25", count: 250 })
    })
  )

  it.scopedLive("refuses more than 100 events, malformed events, and the API key instead of a token", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const session = yield* emu.createSession()
      const stream = streamClient(emu, session.authentication_token)
      const tooMany = yield* stripeError(() =>
        stream.v2.billing.meterEventStream.create({ events: events(customer.id, 101, "x") })
      )
      expect(tooMany).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError)
      expect(tooMany.statusCode).toBe(400)
      const badTs = yield* stripeError(() =>
        stream.v2.billing.meterEventStream.create({
          events: [{ event_name: "api_calls", payload: { stripe_customer_id: customer.id, value: "1" }, timestamp: "1700000000" }]
        })
      )
      expect(badTs.statusCode).toBe(400)
      const withKey = yield* stripeError(() =>
        streamClient(emu, API_KEY).v2.billing.meterEventStream.create({ events: events(customer.id, 1, "k") })
      )
      expect(withKey.statusCode).toBe(401)
      expect(withKey).not.toBeInstanceOf(Stripe.errors.TemporarySessionExpiredError)
      expect(emu.state.meterEvents()).toHaveLength(0)
    })
  )

  it.scopedLive("silently drops duplicate identifiers inside and across stream requests", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const session = yield* emu.createSession()
      const stream = streamClient(emu, session.authentication_token)
      const batch = events(customer.id, 10, "d", "2")
      yield* promise(() => stream.v2.billing.meterEventStream.create({ events: [...batch, batch[0]!, batch[1]!] }))
      yield* promise(() => stream.v2.billing.meterEventStream.create({ events: batch }))
      // v1 sees the stream's identifiers too.
      const dup = yield* stripeError(() => v1(sdk(emu), customer.id, "2", { identifier: "d-3" }))
      expect(dup.message).toContain("d-3")
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "20", count: 10 })
      expect(emu.state.duplicatesIgnored()).toBe(12)
      // the raw log keeps every arrival: 10 accepted, 12 stream duplicates, 1 refused v1 duplicate
      const received = emu.state.received()
      expect(received.filter((r) => r.outcome === "accepted").map((r) => r.identifier)).toEqual(batch.map((e) => e.identifier))
      expect(received.filter((r) => r.outcome === "duplicate").map((r) => `${r.via}:${r.identifier}`)).toEqual([
        "v2:d-0",
        "v2:d-1",
        ...batch.map((e) => `v2:${e.identifier}`),
        "v1:d-3"
      ])
    })
  )

  it.scopedLive("accepts invalid events with 200 and reports them later, like Stripe's async stream", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const session = yield* emu.createSession()
      const stream = streamClient(emu, session.authentication_token)
      yield* promise(() =>
        stream.v2.billing.meterEventStream.create({
          events: [
            ...events(customer.id, 1, "good"),
            { event_name: "api_calls", identifier: "bad-1", payload: { stripe_customer_id: customer.id, value: "1234567890123456" } },
            { event_name: "nope", identifier: "bad-2", payload: { stripe_customer_id: customer.id, value: "1" } }
          ]
        })
      )
      expect(emu.total(customer.id, "api_calls").count).toBe(1)
      expect(emu.state.streamErrors().map((e) => e.identifier)).toEqual(["bad-1", "bad-2"])

      const strict = yield* makeStripeEmulator({ apiKey: API_KEY, streamValidation: "sync" })
      const s2 = yield* setup(strict)
      const token = (yield* strict.createSession()).authentication_token
      const e = yield* stripeError(() =>
        streamClient(strict, token).v2.billing.meterEventStream.create({
          events: [{ event_name: "nope", payload: { stripe_customer_id: s2.customer.id, value: "1" } }]
        })
      )
      expect(e.statusCode).toBe(400)
    })
  )

  it.scopedLive("expires session tokens after 15 minutes and on the expire_sessions fault", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const { customer } = yield* setup(emu)
      const session = yield* promise(() => sdk(emu).v2.billing.meterEventSession.create())
      const stream = streamClient(emu, session.authentication_token)
      yield* promise(() => stream.v2.billing.meterEventStream.create({ events: events(customer.id, 1, "a") }))
      emu.advanceClock(15 * 60 * 1000)
      const expired = yield* stripeError(() => stream.v2.billing.meterEventStream.create({ events: events(customer.id, 1, "b") }))
      expect(expired).toBeInstanceOf(Stripe.errors.TemporarySessionExpiredError)
      expect(expired.statusCode).toBe(401)
      expect(expired.code).toBe("billing_meter_event_session_expired")

      const fresh = yield* promise(() => sdk(emu).v2.billing.meterEventSession.create())
      const s2 = streamClient(emu, fresh.authentication_token)
      yield* promise(() => s2.v2.billing.meterEventStream.create({ events: events(customer.id, 1, "c") }))
      const res = yield* promise(() =>
        fetch(`${emu.url}/_emulator/faults`, { method: "POST", body: JSON.stringify({ expire_sessions: true }) })
      )
      expect(res.status).toBe(200)
      const again = yield* stripeError(() => s2.v2.billing.meterEventStream.create({ events: events(customer.id, 1, "d") }))
      expect(again).toBeInstanceOf(Stripe.errors.TemporarySessionExpiredError)

      const unknown = yield* stripeError(() =>
        streamClient(emu, "mest_notatoken").v2.billing.meterEventStream.create({ events: events(customer.id, 1, "e") })
      )
      expect(unknown.statusCode).toBe(401)
      expect(emu.total(customer.id, "api_calls").count).toBe(2)
    })
  )

  it.scoped("follows the test clock for token expiry", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const session = yield* emu.createSession()
      const stream = streamClient(emu, session.authentication_token)
      const customer = yield* emu.createCustomer({})
      yield* emu.createMeter({ display_name: "c", event_name: "api_calls", default_aggregation: { formula: "count" } })
      const one = [{ event_name: "api_calls", payload: { stripe_customer_id: customer.id } }]
      yield* promise(() => stream.v2.billing.meterEventStream.create({ events: one }))
      yield* TestClock.adjust("14 minutes")
      yield* promise(() => stream.v2.billing.meterEventStream.create({ events: one }))
      yield* TestClock.adjust("1 minute")
      const e = yield* stripeError(() => stream.v2.billing.meterEventStream.create({ events: one }))
      expect(e).toBeInstanceOf(Stripe.errors.TemporarySessionExpiredError)
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "0", count: 2 })
    })
  )
})

describe("emulator: meter event summaries", () => {
  it.scopedLive("aggregates per hour bucket by formula, newest first, minute-aligned bounds", () =>
    Effect.gen(function* () {
      const now = 1_800_003_600 // an hour boundary
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, now: () => now * 1000, summaryDelayMs: 0 })
      const stripe = sdk(emu)
      const customer = yield* emu.createCustomer({})
      const other = yield* emu.createCustomer({})
      const sum = yield* emu.createMeter({ display_name: "s", event_name: "s", default_aggregation: { formula: "sum" } })
      const count = yield* emu.createMeter({ display_name: "c", event_name: "c", default_aggregation: { formula: "count" } })
      const last = yield* emu.createMeter({ display_name: "l", event_name: "l", default_aggregation: { formula: "last" } })
      const h0 = now - 3 * HOUR
      const send = (name: string, c: string, value: string, ts: number) =>
        promise(() => stripe.billing.meterEvents.create({ event_name: name, payload: { stripe_customer_id: c, value }, timestamp: ts }))
      for (const name of ["s", "c", "l"]) {
        yield* send(name, customer.id, "0.1", h0 + 60)
        yield* send(name, customer.id, "0.2", h0 + 120)
        yield* send(name, customer.id, "5", h0 + 2 * HOUR + 59)
        yield* send(name, other.id, "100", h0 + 60)
      }
      const summaries = (meter: string, extra: Partial<Stripe.Billing.MeterListEventSummariesParams> = {}) =>
        promise(() =>
          stripe.billing.meters.listEventSummaries(meter, {
            customer: customer.id,
            start_time: h0,
            end_time: now,
            value_grouping_window: "hour",
            ...extra
          })
        )
      const s = yield* summaries(sum.id)
      expect(s.data.map((x) => [x.start_time, x.end_time, x.aggregated_value])).toEqual([
        [h0 + 2 * HOUR, h0 + 3 * HOUR, 5],
        // Stripe sums as IEEE doubles: 0.1 + 0.2
        [h0, h0 + HOUR, 0.1 + 0.2]
      ])
      expect(s.data[0]).toMatchObject({ object: "billing.meter_event_summary", meter: sum.id, livemode: false })
      const c = yield* summaries(count.id)
      expect(c.data.map((x) => x.aggregated_value)).toEqual([1, 2])
      const l = yield* summaries(last.id)
      expect(l.data.map((x) => x.aggregated_value)).toEqual([5, 0.2])

      const whole = yield* summaries(sum.id, { value_grouping_window: undefined })
      expect(whole.data.map((x) => [x.start_time, x.end_time, x.aggregated_value])).toEqual([[h0, now, 0.1 + 0.2 + 5]])
      const clipped = yield* summaries(sum.id, { start_time: h0 + 120, end_time: h0 + HOUR, value_grouping_window: undefined })
      expect(clipped.data.map((x) => [x.start_time, x.aggregated_value])).toEqual([[h0 + 120, 0.2]])
      // Hourly grouping needs hour-aligned bounds.
      const notHourly = yield* stripeError(() =>
        stripe.billing.meters.listEventSummaries(sum.id, {
          customer: customer.id,
          start_time: h0 + 120,
          end_time: h0 + HOUR,
          value_grouping_window: "hour"
        })
      )
      expect(notHourly.statusCode).toBe(400)
      expect(notHourly.param).toBe("start_time")

      const page1 = yield* summaries(sum.id, { limit: 1 })
      expect(page1.has_more).toBe(true)
      const page2 = yield* summaries(sum.id, { limit: 1, starting_after: page1.data[0]!.id })
      expect(page2.data.map((x) => x.start_time)).toEqual([h0])
      expect(page2.has_more).toBe(false)

      const unaligned = yield* stripeError(() =>
        stripe.billing.meters.listEventSummaries(sum.id, { customer: customer.id, start_time: h0 + 1, end_time: now })
      )
      expect(unaligned.param).toBe("start_time")
      const noCustomer = yield* stripeError(() =>
        stripe.billing.meters.listEventSummaries(sum.id, { start_time: h0, end_time: now } as Stripe.Billing.MeterListEventSummariesParams)
      )
      expect(noCustomer.param).toBe("customer")
    })
  )

  it.scopedLive("answers aggregated_value as Stripe's double sum, after the summary delay", () =>
    Effect.gen(function* () {
      let nowMs = 1_800_003_600_000
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, now: () => nowMs, summaryDelayMs: 3_000 })
      const { customer, meter } = yield* setup(emu)
      for (const v of ["0.1", "0.2", "123456789012345"]) yield* promise(() => v1(sdk(emu), customer.id, v))
      const read = () =>
        promise(() =>
          fetch(
            `${emu.url}/v1/billing/meters/${meter.id}/event_summaries?customer=${customer.id}&start_time=1800000000&end_time=1800007200`,
            { headers: { authorization: `Bearer ${API_KEY}` } }
          ).then((r) => r.json() as Promise<{ data: Array<{ aggregated_value: number }> }>)
        )
      // Not aggregated yet: Stripe's summaries are eventually consistent.
      expect((yield* read()).data.map((x) => x.aggregated_value)).toEqual([0])
      nowMs += 2_999
      expect((yield* read()).data.map((x) => x.aggregated_value)).toEqual([0])
      nowMs += 1
      // Oracle: IEEE double addition in arrival order, not the exact decimal 123456789012345.3.
      expect((yield* read()).data.map((x) => x.aggregated_value)).toEqual([0.1 + 0.2 + 123456789012345])
      // The exact total stays available for inspection.
      expect(emu.total(customer.id, "api_calls").sum).toBe("123456789012345.3")
    })
  )
})

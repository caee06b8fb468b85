import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import Stripe from "stripe"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { API_KEY, promise, sdk, stripeError } from "./helpers.js"

const control = (emu: StripeEmulatorHandle, method: string, path: string, body?: unknown) =>
  promise(() =>
    fetch(`${emu.url}${path}`, { method, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) }).then(async (r) => ({
      status: r.status,
      body: (await r.json()) as Record<string, unknown>
    }))
  )

/** Status of one account call (0 = connection error). */
const accountStatus = (stripe: Stripe) =>
  promise(() =>
    stripe.accounts.retrieveCurrent().then(
      () => 200,
      (e: Stripe.errors.StripeError) => e.statusCode ?? 0
    )
  )

const meterSetup = (emu: StripeEmulatorHandle) =>
  Effect.gen(function* () {
    const customer = yield* emu.createCustomer({})
    yield* emu.createMeter({ display_name: "m", event_name: "api_calls", default_aggregation: { formula: "sum" } })
    return customer
  })

describe("emulator: fault injection", () => {
  it.scopedLive("fails exactly the next N requests with 429 (Retry-After when set), then recovers", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      yield* emu.setFaults({ failNext: { count: 3, kind: "rate_limit" }, retryAfterSeconds: 2 })
      for (let i = 0; i < 3; i++) {
        const e = yield* stripeError(() => stripe.accounts.retrieveCurrent())
        expect(e).toBeInstanceOf(Stripe.errors.StripeRateLimitError)
        expect(e.statusCode).toBe(429)
        expect(e.code).toBe("rate_limit")
        expect(e.headers?.["retry-after"]).toBe("2")
      }
      yield* promise(() => stripe.accounts.retrieveCurrent())
      expect(emu.callCounts()["GET /v1/account"]).toBe(4)
      expect(emu.statusCounts()).toEqual({ 200: 1, 429: 3 })
    })
  )

  it.scopedLive("injects a seeded fraction of 429s, repeatably", () =>
    Effect.gen(function* () {
      // Only the injected 429s are under test here, not Stripe's 25 req/s test-mode limit.
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY, rateLimits: "off" })
      const stripe = sdk(emu)
      const run = Effect.gen(function* () {
        const set = yield* control(emu, "POST", "/_emulator/faults", { rate_limit_fraction: 0.3, seed: 42 })
        expect(set.status).toBe(200)
        const statuses: Array<number> = []
        for (let i = 0; i < 200; i++) statuses.push(yield* accountStatus(stripe))
        return statuses
      })
      const first = yield* run
      const second = yield* run
      expect(second).toEqual(first)
      const limited = first.filter((s) => s === 429).length
      expect(limited).toBeGreaterThan(35)
      expect(limited).toBeLessThan(85)
      expect(first.filter((s) => s !== 429 && s !== 200)).toEqual([])

      expect((yield* control(emu, "DELETE", "/_emulator/faults")).status).toBe(200)
      for (let i = 0; i < 20; i++) expect(yield* accountStatus(stripe)).toBe(200)
    })
  )

  it.scopedLive("answers 5xx api_errors, and scopes faults to path prefixes", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      yield* emu.setFaults({ serverErrorFraction: 1, serverErrorStatus: 503, paths: ["/v1/customers"] })
      const e = yield* stripeError(() => stripe.customers.list())
      expect(e).toBeInstanceOf(Stripe.errors.StripeAPIError)
      expect(e.statusCode).toBe(503)
      expect(yield* accountStatus(stripe)).toBe(200)
      const bad = yield* control(emu, "POST", "/_emulator/faults", { rate_limit_fraction: 2 })
      expect(bad.status).toBe(400)
    })
  )

  it.scopedLive("runs an outage for a duration on the emulator clock", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      yield* control(emu, "POST", "/_emulator/faults", { outage_seconds: 60 })
      for (let i = 0; i < 5; i++) expect(yield* accountStatus(stripe)).toBe(503)
      const e = yield* stripeError(() => stripe.customers.create({ name: "x" }))
      expect(e.type).toBe("StripeAPIError")
      expect(emu.state.customers()).toHaveLength(0)
      const clock = yield* control(emu, "POST", "/_emulator/clock", { advance_seconds: 61 })
      expect(clock.status).toBe(200)
      expect(yield* accountStatus(stripe)).toBe(200)
    })
  )

  it.scopedLive("drops connections without answering (the SDK retries a closed connection once)", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      yield* emu.setFaults({ failNext: { count: 2, kind: "drop" } })
      const e = yield* stripeError(() => stripe.accounts.retrieveCurrent())
      expect(e).toBeInstanceOf(Stripe.errors.StripeConnectionError)
      expect(emu.callCounts()["GET /v1/account"]).toBe(2)
      expect(emu.statusCounts()).toEqual({ 0: 2 })
      yield* promise(() => stripe.accounts.retrieveCurrent())
    })
  )

  it.scopedLive("a dropped v1 meter event call does not hold the customer and meter's one concurrent slot", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const customer = yield* meterSetup(emu)
      const stripe = sdk(emu)
      const send = () =>
        stripe.billing.meterEvents.create({ event_name: "api_calls", payload: { stripe_customer_id: customer.id, value: "1" } })
      // two: Node's agent resends once on a closed reused connection (see the test above)
      yield* emu.setFaults({ failNext: { count: 2, kind: "drop" } })
      const e = yield* stripeError(send)
      expect(e).toBeInstanceOf(Stripe.errors.StripeConnectionError)
      // The dropped request never executed: the next call for the same customer and meter is not
      // refused as concurrent.
      yield* promise(send)
      expect(emu.v1ConcurrentSameCustomerMeter()).toBe(0)
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "1", count: 1 })
    })
  )

  it.scopedLive("adds latency", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      yield* emu.setFaults({ latencyMs: 200 })
      const started = Date.now()
      yield* promise(() => sdk(emu).accounts.retrieveCurrent())
      expect(Date.now() - started).toBeGreaterThanOrEqual(190)
      emu.resetFaults()
      expect((yield* control(emu, "GET", "/_emulator/faults")).body).toEqual({ failNextRemaining: 0 })
    })
  )
})

describe("emulator: hold and release", () => {
  it.scopedLive("applies a held request, answers nothing until release", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const customer = yield* meterSetup(emu)
      const stripe = sdk(emu)
      emu.holdNext((r) => r.path === "/v1/billing/meter_events")
      const call = yield* Effect.fork(
        promise(() =>
          stripe.billing.meterEvents.create({
            event_name: "api_calls",
            identifier: "held-1",
            payload: { stripe_customer_id: customer.id, value: "4" }
          })
        )
      )
      yield* emu.awaitHeld(1)
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "4", count: 1 })
      expect(Option.isNone(yield* Fiber.poll(call))).toBe(true)
      expect(yield* emu.release()).toBe(1)
      const ev = yield* Fiber.join(call)
      expect(ev.identifier).toBe("held-1")
    })
  )

  it.scopedLive("a client that dies while held retries with the same key and gets the stored answer", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const customer = yield* meterSetup(emu)
      const body = new URLSearchParams({
        event_name: "api_calls",
        identifier: "crash-1",
        "payload[stripe_customer_id]": customer.id,
        "payload[value]": "7"
      }).toString()
      const post = (signal?: AbortSignal) =>
        fetch(`${emu.url}/v1/billing/meter_events`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${API_KEY}`,
            "content-type": "application/x-www-form-urlencoded",
            "idempotency-key": "crash-1"
          },
          body,
          ...(signal ? { signal } : {})
        })
      emu.holdNext()
      const abort = new AbortController()
      const lost = post(abort.signal).then(
        () => "answered",
        () => "aborted"
      )
      yield* emu.awaitHeld(1)
      abort.abort()
      expect(yield* promise(() => lost)).toBe("aborted")
      const retry = yield* promise(() => post())
      expect(retry.status).toBe(200)
      expect(retry.headers.get("idempotent-replayed")).toBe("true")
      expect(emu.total(customer.id, "api_calls")).toEqual({ sum: "7", count: 1 })
    })
  )

  it.scopedLive("can hold before applying, and over HTTP", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const customer = yield* meterSetup(emu)
      const stripe = sdk(emu)
      yield* control(emu, "POST", "/_emulator/hold", { method: "POST", path_prefix: "/v1/billing/meter_events", apply_first: false })
      const call = yield* Effect.fork(
        promise(() =>
          stripe.billing.meterEvents.create({ event_name: "api_calls", payload: { stripe_customer_id: customer.id, value: "1" } })
        )
      )
      yield* emu.awaitHeld(1)
      expect(emu.total(customer.id, "api_calls").count).toBe(0)
      expect((yield* control(emu, "POST", "/_emulator/release")).body).toEqual({ released: 1 })
      yield* Fiber.join(call)
      expect(emu.total(customer.id, "api_calls").count).toBe(1)
    })
  )
})

describe("emulator: scope and concurrency", () => {
  it.live("closing the scope answers held requests instead of hanging", () =>
    Effect.gen(function* () {
      const outcome = yield* Effect.scoped(
        Effect.gen(function* () {
          const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
          emu.holdNext()
          const pending = sdk(emu)
            .accounts.retrieveCurrent()
            .then(
              () => "answered",
              () => "failed"
            )
          yield* emu.awaitHeld(1)
          return pending
        })
      )
      expect(["answered", "failed"]).toContain(yield* promise(() => outcome))
    })
  )

  it.scopedLive("counts v1 calls that overlap for the same customer and meter", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const a = yield* meterSetup(emu)
      const b = yield* emu.createCustomer({})
      const stripe = sdk(emu)
      yield* emu.setFaults({ latencyMs: 150 })
      const send = (c: string) =>
        promise(() => stripe.billing.meterEvents.create({ event_name: "api_calls", payload: { stripe_customer_id: c, value: "1" } }))
      yield* Effect.all([send(a.id), send(b.id)], { concurrency: "unbounded" })
      expect(emu.v1ConcurrentSameCustomerMeter()).toBe(0)
      // Stripe allows one concurrent v1 call per customer and meter: the second is refused with 429.
      const both = yield* Effect.all(
        [a.id, a.id].map((c) =>
          Effect.promise(() =>
            stripe.billing.meterEvents
              .create({ event_name: "api_calls", payload: { stripe_customer_id: c, value: "1" } })
              .then(
                () => 200,
                (e: { statusCode?: number; code?: string }) => `${e.statusCode}:${e.code}`
              )
          )
        ),
        { concurrency: "unbounded" }
      )
      expect(both.sort()).toEqual([200, "429:rate_limit"].sort())
      expect(emu.v1ConcurrentSameCustomerMeter()).toBe(1)
      expect(emu.total(a.id, "api_calls")).toEqual({ sum: "2", count: 2 })
      const { body } = yield* control(emu, "GET", "/_emulator/meter_events")
      expect(body.v1_concurrent_same_customer_meter).toBe(1)

      // Switched off, both are accepted (and still counted as an overlap).
      emu.setV1ConcurrencyLimit(false)
      yield* Effect.all([send(a.id), send(a.id)], { concurrency: "unbounded" })
      expect(emu.v1ConcurrentSameCustomerMeter()).toBe(2)
      expect(emu.total(a.id, "api_calls")).toEqual({ sum: "4", count: 4 })
    })
  )
})

describe("emulator: inspection", () => {
  it.scopedLive("reports exact decimal totals per customer and event name, and call counts", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const a = yield* meterSetup(emu)
      const b = yield* emu.createCustomer({})
      const stripe = sdk(emu)
      for (const [c, v] of [
        [a.id, "0.1"],
        [a.id, "0.2"],
        [b.id, "1000000000000.5"]
      ] as const) {
        yield* promise(() => stripe.billing.meterEvents.create({ event_name: "api_calls", payload: { stripe_customer_id: c, value: v } }))
      }
      const { body } = yield* control(emu, "GET", "/_emulator/meter_events")
      expect(body.totals).toEqual(
        expect.arrayContaining([
          { customer: a.id, event_name: "api_calls", sum: "0.3", count: 2 },
          { customer: b.id, event_name: "api_calls", sum: "1000000000000.5", count: 1 }
        ])
      )
      expect(body.events_accepted).toBe(3)
      const requests = yield* control(emu, "GET", "/_emulator/requests")
      expect(requests.body.total).toBe(3)
      expect(requests.body.by_endpoint).toEqual({ "POST /v1/billing/meter_events": 3 })
      expect(requests.body.by_status).toEqual({ 200: 3 })
    })
  )
})

import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import Stripe from "stripe"
import { makeStripeEmulator } from "../../src/stripe-emulator/index.js"
import { API_KEY, promise, sdk, stripeError } from "./helpers.js"

/** A made-up live-mode key, assembled so no live-key-looking literal sits in the repository. */
const FAKE_LIVE_PREFIX = ["sk", "live", ""].join("_")

describe("emulator: account, auth and customers over the stripe SDK", () => {
  it.scopedLive("answers /v1/account with the account id and test mode", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const account = yield* promise(() => sdk(emu).accounts.retrieveCurrent())
      expect(account.id).toBe(emu.accountId)
      expect(account.id).toMatch(/^acct_/)
      expect((account as unknown as { livemode: boolean }).livemode).toBe(false)

      const live = yield* makeStripeEmulator({ apiKey: `${FAKE_LIVE_PREFIX}abcdefghijklmnop9876` })
      const liveAccount = yield* promise(() => sdk(live, `${FAKE_LIVE_PREFIX}abcdefghijklmnop9876`).accounts.retrieveCurrent())
      expect((liveAccount as unknown as { livemode: boolean }).livemode).toBe(true)
    })
  )

  it.scopedLive("refuses a wrong or missing key with 401 and never echoes the key", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const wrong = "sk_test_wrong_secret_value_7777"
      const e = yield* stripeError(() => sdk(emu, wrong).customers.list())
      expect(e).toBeInstanceOf(Stripe.errors.StripeAuthenticationError)
      expect(e.statusCode).toBe(401)
      expect(e.message).toContain("7777")
      expect(e.message).not.toContain("wrong_secret_value")
      expect(e.requestId).toMatch(/^req_/)

      const missing = yield* promise(() => fetch(`${emu.url}/v1/customers`))
      expect(missing.status).toBe(401)
      expect(missing.headers.get("request-id")).toMatch(/^req_/)
      const body = (yield* promise(() => missing.json())) as { error: { type: string; message: string } }
      expect(body.error.type).toBe("invalid_request_error")
      expect(body.error.message).toContain("You did not provide an API key")

      // curl -u sk_test_...: (basic auth) is accepted like Stripe does.
      const basic = yield* promise(() =>
        fetch(`${emu.url}/v1/customers`, { headers: { authorization: `Basic ${Buffer.from(`${API_KEY}:`).toString("base64")}` } })
      )
      expect(basic.status).toBe(200)
    })
  )

  it.scopedLive("round-trips nested-bracket metadata, merges updates and deletes keys set to ''", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      const created = yield* promise(() =>
        stripe.customers.create({
          name: "Ada & Co",
          email: "ada@example.com",
          metadata: { external_id: "cust/42 ü", "weird key[1]": "a=b&c", plan: "pro" }
        })
      )
      expect(created.id).toMatch(/^cus_/)
      expect(created.metadata).toEqual({ external_id: "cust/42 ü", "weird key[1]": "a=b&c", plan: "pro" })

      const fetched = yield* promise(() => stripe.customers.retrieve(created.id))
      expect(fetched).toEqual(created)

      const updated = yield* promise(() =>
        stripe.customers.update(created.id, { name: "Ada Ltd", metadata: { plan: "", tier: "gold" } })
      )
      expect(updated.name).toBe("Ada Ltd")
      expect(updated.email).toBe("ada@example.com")
      expect(updated.metadata).toEqual({ external_id: "cust/42 ü", "weird key[1]": "a=b&c", tier: "gold" })

      const deleted = yield* promise(() => stripe.customers.del(created.id))
      expect(deleted).toEqual({ id: created.id, object: "customer", deleted: true })
      const after = yield* promise(() => stripe.customers.retrieve(created.id))
      expect((after as Stripe.DeletedCustomer).deleted).toBe(true)
      const e = yield* stripeError(() => stripe.customers.update(created.id, { name: "x" }))
      expect(e.statusCode).toBe(404)
      expect(e.code).toBe("resource_missing")

      const missing = yield* stripeError(() => stripe.customers.retrieve("cus_doesnotexist"))
      expect(missing).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError)
      expect(missing.statusCode).toBe(404)
    })
  )

  it.scopedLive("lists ~250 customers newest first with working cursors", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      const ids: Array<string> = []
      for (let i = 0; i < 250; i++) {
        const c = yield* emu.createCustomer({ name: `c${i}`, metadata: { n: String(i) } })
        ids.push(c.id)
      }
      const newestFirst = ids.slice().reverse()
      // Deleted customers disappear from lists without breaking cursors.
      yield* emu.deleteCustomer(ids[10]!)
      const expected = newestFirst.filter((id) => id !== ids[10])

      const p1 = yield* promise(() => stripe.customers.list({ limit: 100 }))
      expect(p1.object).toBe("list")
      expect(p1.url).toBe("/v1/customers")
      expect(p1.has_more).toBe(true)
      expect(p1.data.map((c) => c.id)).toEqual(expected.slice(0, 100))
      const p2 = yield* promise(() => stripe.customers.list({ limit: 100, starting_after: p1.data[99]!.id }))
      expect(p2.data.map((c) => c.id)).toEqual(expected.slice(100, 200))
      expect(p2.has_more).toBe(true)
      const p3 = yield* promise(() => stripe.customers.list({ limit: 100, starting_after: p2.data[99]!.id }))
      expect(p3.data.map((c) => c.id)).toEqual(expected.slice(200))
      expect(p3.has_more).toBe(false)

      const back = yield* promise(() => stripe.customers.list({ limit: 5, ending_before: p2.data[0]!.id }))
      expect(back.data.map((c) => c.id)).toEqual(expected.slice(95, 100))

      const dflt = yield* promise(() => stripe.customers.list())
      expect(dflt.data).toHaveLength(10)

      const all = yield* promise(() => stripe.customers.list({ limit: 100 }).autoPagingToArray({ limit: 1000 }))
      expect(all.map((c) => c.id)).toEqual(expected)

      const tooMany = yield* stripeError(() => stripe.customers.list({ limit: 101 }))
      expect(tooMany.statusCode).toBe(400)
      expect(tooMany.param).toBe("limit")
      const zero = yield* stripeError(() => stripe.customers.list({ limit: 0 }))
      expect(zero.statusCode).toBe(400)
    })
  )

  it.scopedLive("replays a POST sent again with the same Idempotency-Key and refuses it with other params", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const stripe = sdk(emu)
      const a = yield* promise(() => stripe.customers.create({ name: "once" }, { idempotencyKey: "k-1" }))
      const b = yield* promise(() => stripe.customers.create({ name: "once" }, { idempotencyKey: "k-1" }))
      expect(b.id).toBe(a.id)
      expect(emu.state.customers()).toHaveLength(1)
      const raw = yield* promise(() =>
        fetch(`${emu.url}/v1/customers`, {
          method: "POST",
          headers: { authorization: `Bearer ${API_KEY}`, "idempotency-key": "k-1", "content-type": "application/x-www-form-urlencoded" },
          body: "name=once"
        })
      )
      expect(raw.headers.get("idempotent-replayed")).toBe("true")
      const e = yield* stripeError(() => stripe.customers.create({ name: "other" }, { idempotencyKey: "k-1" }))
      expect(e).toBeInstanceOf(Stripe.errors.StripeIdempotencyError)
      expect(emu.state.customers()).toHaveLength(1)
    })
  )

  it.scopedLive("answers unknown routes with Stripe's 404", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const res = yield* promise(() => fetch(`${emu.url}/v1/nope`, { headers: { authorization: `Bearer ${API_KEY}` } }))
      expect(res.status).toBe(404)
      const body = (yield* promise(() => res.json())) as { error: { message: string } }
      expect(body.error.message).toContain("Unrecognized request URL (GET: /v1/nope)")
    })
  )

  it.scopedLive("creates customers in bulk through the control plane, listed like any other", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      const post = (body: unknown) =>
        promise(() => fetch(`${emu.url}/_emulator/customers`, { method: "POST", body: JSON.stringify(body) }))
      const res = yield* post({ count: 3 })
      expect(res.status).toBe(200)
      const { ids } = (yield* promise(() => res.json())) as { ids: Array<string> }
      expect(ids).toHaveLength(3)
      expect(new Set(ids).size).toBe(3)
      const listed = yield* promise(() => sdk(emu).customers.list({ limit: 10 }))
      expect(listed.data.map((c) => c.id).sort()).toEqual([...ids].sort())
      expect(emu.state.events().filter((e) => e.type === "customer.created")).toHaveLength(3)
      for (const bad of [{ count: 0 }, { count: 1.5 }, { count: "3" }, {}]) expect((yield* post(bad)).status).toBe(400)
    })
  )
})

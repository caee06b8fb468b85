import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { createServer, type IncomingHttpHeaders } from "node:http"
import Stripe from "stripe"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { API_KEY, promise, sdk } from "./helpers.js"

const SECRET = "whsec_test_emulator_secret_0001"
const OLD_SECRET = "whsec_test_emulator_secret_0000"
const verifier = new Stripe(API_KEY)

interface Received {
  readonly body: string
  readonly headers: IncomingHttpHeaders
}

/** A local webhook endpoint that records raw bodies and answers `status()`. */
const receiver = Effect.acquireRelease(
  Effect.async<{ url: string; received: Array<Received>; setStatus: (s: number) => void; close: () => void }>((resume) => {
    const received: Array<Received> = []
    let status = 200
    const server = createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        received.push({ body: Buffer.concat(chunks).toString("utf8"), headers: req.headers })
        res.statusCode = status
        res.end("ok")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address()
      const port = typeof addr === "object" && addr ? addr.port : 0
      resume(
        Effect.succeed({
          url: `http://127.0.0.1:${port}/webhooks/stripe`,
          received,
          setStatus: (s: number) => {
            status = s
          },
          close: () => {
            server.closeAllConnections()
            server.close()
          }
        })
      )
    })
  }),
  (r) => Effect.sync(() => r.close())
)

const verify = (r: Received, secret = SECRET) =>
  verifier.webhooks.constructEvent(r.body, r.headers["stripe-signature"] as string, secret)

const setupEmulator = Effect.gen(function* () {
  const hook = yield* receiver
  const emu = yield* makeStripeEmulator({ apiKey: API_KEY, webhook: { url: hook.url, secret: Redacted.make(SECRET) } })
  return { hook, emu }
})

const flush = (emu: StripeEmulatorHandle) => emu.deliveries.flush

describe("emulator: webhooks", () => {
  it.scopedLive("signs customer events exactly as Stripe: constructEvent accepts them", () =>
    Effect.gen(function* () {
      const { hook, emu } = yield* setupEmulator
      const stripe = sdk(emu)
      const c = yield* promise(() => stripe.customers.create({ name: "Hook", metadata: { external_id: "e-1" } }))
      yield* promise(() => stripe.customers.update(c.id, { email: "h@example.com", metadata: { external_id: "e-2" } }))
      yield* promise(() => stripe.customers.del(c.id))
      yield* flush(emu)
      expect(hook.received).toHaveLength(3)
      const events = hook.received.map((r) => verify(r))
      expect(events.map((e) => e.type)).toEqual(["customer.created", "customer.updated", "customer.deleted"])
      const created = events[0]!
      expect(created).toMatchObject({ object: "event", livemode: false, pending_webhooks: 1 })
      expect(created.id).toMatch(/^evt_/)
      expect((created.data.object as Stripe.Customer).metadata).toEqual({ external_id: "e-1" })
      expect(created.request?.id).toMatch(/^req_/)
      const updated = events[1]!
      expect(updated.data.previous_attributes).toEqual({ email: null, metadata: { external_id: "e-1" } })
      expect((events[2]!.data.object as Stripe.Customer).id).toBe(c.id)
      expect(hook.received[0]!.headers["stripe-signature"]).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/)
      expect(emu.deliveries.log().map((d) => d.status)).toEqual([200, 200, 200])
      // Stored like Stripe's events API.
      const listed = yield* promise(() => stripe.events.list({ limit: 3 }))
      expect(listed.data.map((e) => e.type)).toEqual(["customer.deleted", "customer.updated", "customer.created"])
    })
  )

  it.scopedLive("produces signatures verification must reject: tampered, stale, wrong secret", () =>
    Effect.gen(function* () {
      const { hook, emu } = yield* setupEmulator
      emu.deliveries.setSigning({ tamper: true })
      yield* emu.createCustomer({ name: "t" })
      yield* flush(emu)
      expect(() => verify(hook.received[0]!)).toThrow(Stripe.errors.StripeSignatureVerificationError)

      emu.deliveries.setSigning({ timestampOffsetSeconds: -600 })
      yield* emu.createCustomer({ name: "s" })
      yield* flush(emu)
      expect(() => verify(hook.received[1]!)).toThrow(/tolerance/)

      emu.deliveries.setSigning({})
      yield* emu.createCustomer({ name: "ok" })
      yield* flush(emu)
      expect(verify(hook.received[2]!).type).toBe("customer.created")
      expect(() => verify(hook.received[2]!, "whsec_other")).toThrow(Stripe.errors.StripeSignatureVerificationError)
      // Tampering with the delivered bytes breaks it too.
      const r = hook.received[2]!
      expect(() => verify({ ...r, body: r.body.replace('"ok"', '"ko"') })).toThrow(Stripe.errors.StripeSignatureVerificationError)
    })
  )

  it.scopedLive("signs with every secret during a rotation (two v1 signatures)", () =>
    Effect.gen(function* () {
      const { hook, emu } = yield* setupEmulator
      emu.deliveries.setSigning({ extraSecrets: [OLD_SECRET] })
      yield* emu.createCustomer({ name: "rot" })
      yield* flush(emu)
      const header = hook.received[0]!.headers["stripe-signature"] as string
      expect(header.match(/v1=/g)).toHaveLength(2)
      expect(verify(hook.received[0]!, SECRET).type).toBe("customer.created")
      expect(verify(hook.received[0]!, OLD_SECRET).type).toBe("customer.created")
    })
  )

  it.scopedLive("duplicates, holds and reorders deliveries, and records the status received", () =>
    Effect.gen(function* () {
      const { hook, emu } = yield* setupEmulator
      emu.deliveries.duplicateNext(1)
      const a = yield* emu.createCustomer({ name: "dup" })
      yield* flush(emu)
      expect(hook.received.map((r) => verify(r).id)).toHaveLength(2)
      expect(new Set(hook.received.map((r) => verify(r).id)).size).toBe(1)
      expect(emu.deliveries.log().map((d) => d.attempt)).toEqual([1, 2])

      emu.deliveries.hold()
      yield* emu.updateCustomer(a.id, { metadata: { external_id: "x" } })
      const b = yield* emu.createCustomer({ name: "second" })
      yield* flush(emu)
      expect(hook.received).toHaveLength(2)
      const held = emu.deliveries.held()
      expect(held.map((e) => e.type)).toEqual(["customer.updated", "customer.created"])
      const results = yield* emu.deliveries.release("reverse")
      expect(results.map((r) => r.status)).toEqual([200, 200])
      const order = hook.received.slice(2).map((r) => verify(r))
      expect(order.map((e) => e.type)).toEqual(["customer.created", "customer.updated"])
      expect((order[0]!.data.object as Stripe.Customer).id).toBe(b.id)

      emu.deliveries.hold()
      yield* emu.deleteCustomer(a.id)
      yield* emu.deleteCustomer(b.id)
      const [first, second] = emu.deliveries.held()
      yield* emu.deliveries.release([second!.id, first!.id])
      expect(hook.received.slice(4).map((r) => verify(r).id)).toEqual([second!.id, first!.id])

      hook.setStatus(500)
      const c = yield* emu.createCustomer({ name: "fails" })
      yield* flush(emu)
      const failed = emu.deliveries.log().at(-1)!
      expect(failed.status).toBe(500)
      hook.setStatus(200)
      const again = yield* emu.deliveries.redeliver(failed.eventId)
      expect(again).toMatchObject({ status: 200, attempt: 2 })
      expect((verify(hook.received.at(-1)!).data.object as Stripe.Customer).id).toBe(c.id)
    })
  )

  it.scopedLive("delays deliveries without delaying the API answer", () =>
    Effect.gen(function* () {
      const { hook, emu } = yield* setupEmulator
      emu.deliveries.setDelay(300)
      const started = Date.now()
      yield* promise(() => sdk(emu).customers.create({ name: "slow" }))
      expect(hook.received).toHaveLength(0)
      yield* flush(emu)
      expect(hook.received).toHaveLength(1)
      expect(Date.now() - started).toBeGreaterThanOrEqual(290)
    })
  )

  it.scopedLive("records an unreachable target as status null and keeps the API working", () =>
    Effect.gen(function* () {
      const emu = yield* makeStripeEmulator({ apiKey: API_KEY })
      emu.setWebhookTarget({ url: "http://127.0.0.1:9/unreachable", secret: SECRET })
      const c = yield* promise(() => sdk(emu).customers.create({ name: "x" }))
      expect(c.id).toMatch(/^cus_/)
      yield* flush(emu)
      expect(emu.deliveries.log()[0]).toMatchObject({ status: null, type: "customer.created" })
    })
  )
})

import { Effect } from "effect"
import { createServer } from "node:http"
import Stripe from "stripe"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"

export const API_KEY = "sk_test_emulator_0123456789abcdef4242"

/** The official SDK pointed at the emulator; no SDK retries so tests see every attempt. */
export const sdk = (handle: StripeEmulatorHandle, key: string = API_KEY): Stripe =>
  new Stripe(key, { host: handle.host, port: handle.port, protocol: "http", maxNetworkRetries: 0, telemetry: false })

export const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** The Stripe error a promise rejects with (or fails the test if it resolves). */
export const stripeError = (f: () => Promise<unknown>) =>
  Effect.flatMap(
    Effect.promise(() =>
      f().then(
        () => ({ ok: true as const }),
        (e: unknown) => ({ ok: false as const, e: e as Stripe.errors.StripeError })
      )
    ),
    (r) => (r.ok ? Effect.dieMessage("expected the call to fail") : Effect.succeed(r.e))
  )

export const nowSec = () => Math.floor(Date.now() / 1000)

/** JSON call to the emulator's control plane (or any route) without the SDK. */
export const control = (handle: StripeEmulatorHandle, method: string, path: string, body?: unknown) =>
  promise(() =>
    fetch(`${handle.url}${path}`, { method, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) }).then(async (r) => ({
      status: r.status,
      body: (await r.json()) as Record<string, unknown>
    }))
  )

export interface Received {
  readonly body: string
  readonly headers: import("node:http").IncomingHttpHeaders
  readonly atMs: number
}

/** A local HTTP endpoint that records raw bodies and answers the statuses queued with `answer` (then 200). */
export const endpoint = Effect.acquireRelease(
  Effect.async<{ url: string; received: Array<Received>; answer: (...statuses: Array<number>) => void; close: () => void }>(
    (resume) => {
      const received: Array<Received> = []
      const queue: Array<number> = []
      const server = createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (c: Buffer) => chunks.push(c))
        req.on("end", () => {
          received.push({ body: Buffer.concat(chunks).toString("utf8"), headers: req.headers, atMs: Date.now() })
          res.statusCode = queue.shift() ?? 200
          res.end("ok")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const addr = server.address()
        const port = typeof addr === "object" && addr ? addr.port : 0
        resume(
          Effect.succeed({
            url: `http://127.0.0.1:${port}/hook`,
            received,
            answer: (...statuses: Array<number>) => {
              queue.push(...statuses)
            },
            close: () => {
              server.closeAllConnections()
              server.close()
            }
          })
        )
      })
    }
  ),
  (r) => Effect.sync(() => r.close())
)

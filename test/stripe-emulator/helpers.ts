import { Effect } from "effect"
import Stripe from "stripe"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"

export const API_KEY = "sk_test_emulator_0123456789abcdef4242"

/** The official SDK pointed at the emulator; no SDK retries so tests see every attempt. */
export const sdk = (handle: StripeEmulatorHandle, key: string = API_KEY): Stripe =>
  new Stripe(key, { host: handle.host, port: handle.port, protocol: "http", maxNetworkRetries: 0 })

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

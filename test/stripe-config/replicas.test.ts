/**
 * A key change made through one replica is used by every other replica at once, not when its
 * 5-minute decrypted-key cache expires: two app instances on one PostgreSQL database; replica B
 * has the key cached; the stored key is replaced through replica A; B's next Stripe call uses the
 * new key (the emulator refuses it), and B follows the change back just as fast.
 */
import { layer } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { expect } from "vitest"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { Encryption } from "../../src/security/Encryption.js"
import { makeStripeEmulator } from "../../src/stripe-emulator/index.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, apiError, inTestTenant, Replica, TestTenant } from "../support/TestApp.js"
import { STRIPE_KEY, stripeEnv } from "../sync/support.js"

/**
 * Replica A (the layer's service) and replica B (`Replica`) on one PostgreSQL database with the
 * same master keys (TestApp.replica takes A's settings), both talking to one Stripe emulator.
 */
const replicas = Layer.unwrapScoped(
  Effect.map(makeStripeEmulator({ apiKey: STRIPE_KEY, now: () => Date.now() }), (emulator) =>
    TestApp.replica.pipe(Layer.provideMerge(TestApp.layer({ backend: "postgres", env: stripeEnv(emulator.url) })))
  )
)

/** Replaces the stored key through replica A's services (what its PUT handler stores). */
const storeKeyViaA = (key: string) =>
  inTestTenant(
    Effect.gen(function* () {
      const enc = yield* Encryption
      const repo = yield* StripeConfigRepo
      const stored = yield* repo.getStored
      if (stored._tag === "None") return yield* Effect.die("not configured")
      yield* repo.upsert({
        ...stored.value,
        apiKeyEncrypted: yield* enc.encrypt(Redacted.make(key)),
        apiKeyHint: `${key.slice(0, 8)}…${key.slice(-4)}`,
        keyVersion: enc.newestVersion
      })
    })
  )

forEachBackend(["postgres"], () => {
  layer(replicas, { excludeTestServices: true })("Stripe key changes across replicas (PostgreSQL)", (it) => {
    it.effect("replica B uses the key stored through replica A on its next call", () =>
      Effect.gen(function* () {
        const a = yield* ApiClient
        const [, put] = yield* a.stripeConfig.putConfig({ payload: { api_key: Redacted.make(STRIPE_KEY) }, withResponse: true })
        expect(put.status).toBe(200)
        // B decrypts and caches the key (same tenant: A's API key, shared database)
        const b = yield* (yield* Replica).client((yield* TestTenant).apiKey)
        const [, warm] = yield* b.stripeConfig.testConfig({ withResponse: true })
        expect(warm.status).toBe(200)

        const replaced = "sk_test_51ReplacedKeyNotKnownToStripe0000000000009999"
        yield* storeKeyViaA(replaced)
        const started = Date.now()
        const after = yield* apiError(b.stripeConfig.testConfig())
        expect([after._tag, after.code]).toEqual(["InvalidInput", "stripe_authentication_failed"])
        expect(after.message).toMatch(/auth|api key|invalid/i)
        // neither key in the answer (Stripe's message names the refused key masked)
        expect(JSON.stringify(after)).not.toContain(STRIPE_KEY)
        expect(JSON.stringify(after)).not.toContain(replaced)

        yield* storeKeyViaA(STRIPE_KEY)
        const [, back] = yield* b.stripeConfig.testConfig({ withResponse: true })
        expect(back.status).toBe(200)
        // within seconds: no waiting involved beyond the calls themselves
        expect(Date.now() - started).toBeLessThan(5_000)
      })
    )
  })
})

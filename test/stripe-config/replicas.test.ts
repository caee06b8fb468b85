/**
 * A key change made through one replica is used by every other replica at once, not when its
 * 5-minute decrypted-key cache expires: two app instances on one PostgreSQL database; replica B
 * has the key cached; the stored key is replaced through replica A; B's next Stripe call uses the
 * new key (the emulator refuses it), and B follows the change back just as fast.
 */
import { Effect, Exit, Redacted, Scope } from "effect"
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { Encryption } from "../../src/security/Encryption.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { forEachBackend, freshPostgresDatabase, POSTGRES_URL_VAR, startTestApp, type TestApp } from "../support/app.js"
import { STRIPE_KEY, stripeEnv } from "../sync/support.js"

forEachBackend(["postgres"], () => {
  describe("Stripe key changes across replicas (PostgreSQL)", () => {
    const emuScope = Effect.runSync(Scope.make())
    let emulator: StripeEmulatorHandle
    let a: TestApp
    let b: TestApp
    let drop: () => Promise<void>

    beforeAll(async () => {
      emulator = await Effect.runPromise(makeStripeEmulator({ apiKey: STRIPE_KEY, now: () => Date.now() }).pipe(Scope.extend(emuScope)))
      const db = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
      drop = db.drop
      // replicas share the database and the master keys
      const env = { ...stripeEnv(emulator.url), FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}` }
      a = await startTestApp({ backend: "postgres", databaseUrl: db.url, env })
      b = await startTestApp({ backend: "postgres", databaseUrl: db.url, env })
    }, 60_000)
    afterAll(async () => {
      await b?.dispose()
      await a?.dispose()
      await drop?.()
      await Effect.runPromise(Scope.close(emuScope, Exit.void))
    })

    /** Replaces the stored key through replica A's services (what its PUT handler stores). */
    const storeKeyViaA = (key: string) =>
      a.run(
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
        }).pipe(Effect.provideService(CurrentTenant, a.scope))
      )

    it("replica B uses the key stored through replica A on its next call", async () => {
      const put = await a.request("PUT", "/v1/stripe/config", { api_key: STRIPE_KEY })
      expect(put.status).toBe(200)
      // B decrypts and caches the key (same tenant: A's API key, shared database)
      const warm = await b.request("POST", "/v1/stripe/config/test", undefined, { apiKey: a.apiKey })
      expect(warm.status).toBe(200)

      await storeKeyViaA("sk_test_51ReplacedKeyNotKnownToStripe0000000000009999")
      const started = Date.now()
      const after = await b.request("POST", "/v1/stripe/config/test", undefined, { apiKey: a.apiKey })
      expect(after.status, after.text).not.toBe(200)
      expect(after.text).toMatch(/auth|api key|invalid/i)
      expect(after.text).not.toContain(STRIPE_KEY)

      await storeKeyViaA(STRIPE_KEY)
      const back = await b.request("POST", "/v1/stripe/config/test", undefined, { apiKey: a.apiKey })
      expect(back.status, back.text).toBe(200)
      // within seconds: no waiting involved beyond the calls themselves
      expect(Date.now() - started).toBeLessThan(5_000)
    })
  })
})

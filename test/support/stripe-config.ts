/**
 * Stores a tenant's Stripe key and settings straight in the repository (what PUT
 * /v1/stripe/config ends with, without its checks against Stripe), for tests and benchmarks
 * that set a tenant up without the HTTP API. Runs as the CurrentTenant.
 */
import { Effect, Redacted } from "effect"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { Encryption } from "../../src/security/Encryption.js"
import { StripeAccounts } from "../../src/stripe/StripeAccounts.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"

export const storeStripeConfig = (options: {
  readonly apiKey: string
  readonly accountId: string
  readonly syncEnabled?: boolean
  readonly windowMinutes?: number
  readonly graceMinutes?: number
  readonly transport?: "stream" | "v1"
}) =>
  Effect.gen(function* () {
    const enc = yield* Encryption
    yield* (yield* StripeConfigRepo).upsert({
      apiKeyEncrypted: yield* enc.encrypt(Redacted.make(options.apiKey)),
      apiKeyHint: `${options.apiKey.slice(0, 8)}…${options.apiKey.slice(-4)}`,
      webhookSecretEncrypted: null,
      keyVersion: enc.newestVersion,
      syncEnabled: options.syncEnabled ?? true,
      aggregationWindowMinutes: options.windowMinutes ?? 60,
      gracePeriodMinutes: options.graceMinutes ?? 5,
      transport: options.transport ?? "stream",
      livemode: false,
      stripeAccountId: options.accountId
    })
    // the decrypted key is cached per tenant: the next call reads the new one
    yield* (yield* StripeAccounts).invalidate(yield* CurrentTenant)
  })

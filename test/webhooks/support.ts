/**
 * Shared set-up for webhook and Stripe config tests: an emulator, a service wired to it, keys.
 * `harnessLayer` and the effects below it, for `it.layer` suites.
 */
import { Context, Effect, Layer, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { makeStripeEmulator, signatureHeader, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import type { Backend } from "../support/app.js"
import * as TestAppLayer from "../support/TestApp.js"

export const API_KEY = "sk_test_51EmulatorKey000000000004242"
export const WEBHOOK_SECRET = "whsec_tenant_secret_0123456789abcdef"
export const GLOBAL_SECRET = "whsec_global_secret_fedcba9876543210"
export const key1 = randomBytes(32).toString("base64")
export const key2 = randomBytes(32).toString("base64")

/** The service's settings beside an emulator at `emulatorUrl`: Stripe bases, master key `key1`, global webhook secret. */
const harnessEnv = (emulatorUrl: string, env: Record<string, string>): Record<string, string> => ({
  STRIPE_API_BASE: emulatorUrl,
  STRIPE_METER_EVENTS_API_BASE: emulatorUrl,
  FLEXPRICE_ENCRYPTION_KEYS: `1:${key1}`,
  STRIPE_WEBHOOK_SECRET: GLOBAL_SECRET,
  ...env
})

/** The Stripe emulator the service of `harnessLayer` talks to. */
export class Emulator extends Context.Tag("test/StripeEmulator")<Emulator, StripeEmulatorHandle>() {}

/**
 * The service (TestAppLayer.layer) wired to a fresh Stripe emulator, for `it.layer` suites: its Stripe
 * API bases point at the emulator, master key `key1`, global webhook secret `GLOBAL_SECRET`.
 */
export const harnessLayer = (backend: Backend, env: Record<string, string> = {}) =>
  Layer.unwrapScoped(
    Effect.map(makeStripeEmulator({ apiKey: Redacted.make(API_KEY) }), (emulator) =>
      Layer.merge(
        TestAppLayer.layer({
          backend,
          env: harnessEnv(emulator.url, env)
        }),
        Layer.succeed(Emulator, emulator)
      )
    )
  )

/** The test tenant's own webhook path. */
export const tenantWebhookPath = Effect.map(TestAppLayer.TestTenant, ({ scope }) => `/webhooks/stripe/${scope.tenantId}/${scope.environmentId}`)

/** Configures Stripe for the test tenant (key + webhook secret) and points the emulator's deliveries at it. */
export const configureTenant = Effect.gen(function* () {
  const api = yield* TestAppLayer.ApiClient
  const view = yield* api.stripeConfig.putConfig({ payload: { api_key: Redacted.make(API_KEY), webhook_secret: Redacted.make(WEBHOOK_SECRET) } })
  ;(yield* Emulator).setWebhookTarget({ url: `${yield* TestAppLayer.serverUrl}${yield* tenantWebhookPath}`, secret: WEBHOOK_SECRET })
  return view
})

/** The layer of `harnessLayer` with the test tenant configured (`configureTenant`) before any test runs. */
export const configuredLayer = (backend: Backend, env: Record<string, string> = {}) =>
  Layer.effectDiscard(configureTenant).pipe(Layer.provideMerge(harnessLayer(backend, env)))

/** A webhook delivery as Stripe sends it: the payload as is, no API key, `headers` (the signature). */
export const deliver = (path: string, payload: string, headers: Record<string, string> = {}) =>
  TestAppLayer.raw("POST", path, { apiKey: "", body: payload, headers: { "content-type": "application/json", ...headers } })

/** `deliver` signed with `secrets` at `t` (seconds). */
export const deliverSigned = (path: string, payload: string, secrets: ReadonlyArray<string>, t = Math.floor(Date.now() / 1000)) =>
  deliver(path, payload, { "stripe-signature": signatureHeader(payload, secrets, t) })

/** Shared with the core suites: they live beside the layer. */
export { inTestTenant, rows } from "../support/TestApp.js"

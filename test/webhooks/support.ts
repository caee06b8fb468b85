/** Shared set-up for webhook and Stripe config tests: an emulator, a service wired to it, keys. */
import { Effect, Exit, Redacted, Scope } from "effect"
import { randomBytes } from "node:crypto"
import { PgClient } from "@effect/sql-pg"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { checkedAnswer, startTestApp, type AppServices, type Backend, type TestApp } from "../support/app.js"
import type { SuccessBody } from "../support/routes.js"

export const API_KEY = "sk_test_51EmulatorKey000000000004242"
export const WEBHOOK_SECRET = "whsec_tenant_secret_0123456789abcdef"
export const GLOBAL_SECRET = "whsec_global_secret_fedcba9876543210"
export const key1 = randomBytes(32).toString("base64")
export const key2 = randomBytes(32).toString("base64")

export interface Harness {
  readonly app: TestApp
  readonly emulator: StripeEmulatorHandle
  readonly close: () => Promise<void>
  /** Runs an effect in the app with the first tenant as CurrentTenant. */
  readonly inTenant: <A, E>(effect: Effect.Effect<A, E, AppServices | CurrentTenant>) => Promise<A>
  readonly sql: (query: string) => Promise<ReadonlyArray<Record<string, unknown>>>
  readonly webhookPath: string
}

export const startHarness = async (backend: Backend, env: Record<string, string> = {}): Promise<Harness> => {
  const scope = await Effect.runPromise(Scope.make())
  const emulator = await Effect.runPromise(Scope.extend(makeStripeEmulator({ apiKey: Redacted.make(API_KEY) }), scope))
  const app = await startTestApp({
    backend,
    env: {
      STRIPE_API_BASE: emulator.url,
      STRIPE_METER_EVENTS_API_BASE: emulator.url,
      FLEXPRICE_ENCRYPTION_KEYS: `1:${key1}`,
      STRIPE_WEBHOOK_SECRET: GLOBAL_SECRET,
      ...env
    }
  }).catch(async (e) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw e
  })
  const inTenant: Harness["inTenant"] = (effect) => app.run(Effect.provideService(effect, CurrentTenant, app.scope))
  const sql = (query: string) => app.run(Effect.flatMap(PgClient.PgClient, (s) => s.unsafe<Record<string, unknown>>(query)))
  return {
    app,
    emulator,
    inTenant,
    sql,
    webhookPath: `/webhooks/stripe/${app.scope.tenantId}/${app.scope.environmentId}`,
    close: async () => {
      await app.dispose()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

/** Configures Stripe for the harness tenant (key + webhook secret) and points the emulator at it. */
export const configure = async (h: Harness) => {
  const res = await h.app.request("PUT", "/v1/stripe/config", { api_key: API_KEY, webhook_secret: WEBHOOK_SECRET })
  if (res.status !== 200) throw new Error(`config failed: ${res.status} ${res.text}`)
  h.emulator.setWebhookTarget({ url: `${h.app.baseUrl}${h.webhookPath}`, secret: WEBHOOK_SECRET })
  return res
}

export const post = async (url: string, body: string | Uint8Array, headers: Record<string, string> = {}) => {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body })
  return checkedAnswer<SuccessBody<"POST", "/webhooks/stripe">>("POST", url, res)
}

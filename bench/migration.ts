/**
 * Stripe customer migration benchmark (not a test: nothing is asserted about time).
 *
 *   npx tsx bench/migration.ts [customers=5000] [postgresUrl]
 *
 * The real service in this process (HTTP API + migration runner) over embedded PGlite, or a fresh
 * PostgreSQL database when a URL is given, against the Stripe emulator on loopback:
 * 1. first migration, no rate limit: every customer is created and mapped;
 * 2. the same again: everything already mapped (the cost of a re-run / resume);
 * 3. dry run on a fresh tenant;
 * 4. Stripe test-mode limits: the client's limiter at 20 requests/s (STRIPE_RATE_LIMIT_TEST_PER_SECOND
 *    default) and the emulator answering 25 % of list requests with 429; counts must still be exact.
 * Customers per second = Stripe customers seen / wall time from POST to `completed`.
 */
import { Effect } from "effect"
import { pathToFileURL } from "node:url"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../src/stripe-emulator/index.js"
import { CurrentTenant } from "../src/domain/Tenant.js"
import type { TenantScope } from "../src/domain/Ids.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"
import { machine, startBenchApp, type BenchApp } from "./harness.js"
import { storeStripeConfig } from "../test/support/stripe-config.js"

export interface BenchResult {
  readonly name: string
  readonly value: string
  readonly detail: string
}

const KEY = "sk_test_bench_migration_0000"
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const stripeEnv = (url: string, perSecond: number): Record<string, string> => ({
  STRIPE_API_BASE: url,
  STRIPE_METER_EVENTS_API_BASE: url,
  STRIPE_RATE_LIMIT_TEST_PER_SECOND: String(perSecond),
  STRIPE_RETRY_RATE_LIMITED_BASE_MS: "100",
  FLEXPRICE_LOG_LEVEL: "Error"
})

const tenant = async (app: BenchApp, emulator: StripeEmulatorHandle) => {
  const t = await app.runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create(`bench-${Math.random().toString(36).slice(2)}`, "bench")))
  const scope = { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope
  await app.runtime.runPromise(
    storeStripeConfig({ apiKey: KEY, accountId: emulator.accountId, syncEnabled: false }).pipe(Effect.provideService(CurrentTenant, scope))
  )
  return t.apiKey
}

const migrate = async (app: BenchApp, apiKey: string, body: unknown) => {
  const t0 = performance.now()
  const res = await fetch(`${app.baseUrl}/v1/stripe/migrate/customers`, {
    method: "POST",
    headers: { "x-api-key": apiKey, "content-type": "application/json" },
    body: JSON.stringify(body)
  })
  const { migration_id } = (await res.json()) as { migration_id: string }
  for (;;) {
    const s = (await (await fetch(`${app.baseUrl}/v1/stripe/migrate/status/${migration_id}`, { headers: { "x-api-key": apiKey } })).json()) as {
      status: string
      counts: Record<string, number>
      error: string | null
    }
    if (s.status !== "running") return { ...s, seconds: (performance.now() - t0) / 1000 }
    await new Promise((r) => setTimeout(r, 10))
  }
}

export const benchMigration = async (options: { readonly customers?: number; readonly postgresUrl?: string } = {}) => {
  const n = options.customers ?? 5_000
  const results: Array<BenchResult> = []
  const backend = options.postgresUrl ? "PostgreSQL" : "PGlite"
  await Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const emulator = yield* makeStripeEmulator({ apiKey: KEY, rateLimits: "off" /* bench: test-mode 25 req/s lifted */ })
        for (let i = 0; i < n; i++)
          yield* emulator.createCustomer({ name: `c${i}`, email: `c${i}@example.com`, metadata: { external_id: `bench-${i}` } })

        yield* Effect.promise(async () => {
          const app = await startBenchApp({ ...(options.postgresUrl ? { postgresUrl: options.postgresUrl } : {}), env: stripeEnv(emulator.url, 100_000) })
          try {
            const key = await tenant(app, emulator)
            const first = await migrate(app, key, {})
            if (first.counts["mapped"] !== n || first.counts["created"] !== n) throw new Error(`unexpected counts ${JSON.stringify(first)}`)
            results.push({
              name: `migration, new customers (${backend})`,
              value: `${fmt(n / first.seconds)} customers/s`,
              detail: `${fmt(n)} Stripe customers created + mapped in ${fmt(first.seconds, 2)} s, no rate limit`
            })
            const again = await migrate(app, key, {})
            if (again.counts["already_mapped"] !== n) throw new Error(`unexpected counts ${JSON.stringify(again)}`)
            results.push({
              name: `migration, re-run (${backend})`,
              value: `${fmt(n / again.seconds)} customers/s`,
              detail: `${fmt(n)} already mapped in ${fmt(again.seconds, 2)} s`
            })
            const dry = await migrate(app, await tenant(app, emulator), { dry_run: true })
            results.push({
              name: `migration, dry run (${backend})`,
              value: `${fmt(n / dry.seconds)} customers/s`,
              detail: `${fmt(n)} customers in ${fmt(dry.seconds, 2)} s, nothing written`
            })
          } finally {
            await app.dispose()
          }

          // Test-mode limits: 20 requests/s from the client, plus 429s from "Stripe".
          const limited = await startBenchApp({ ...(options.postgresUrl ? { postgresUrl: options.postgresUrl } : {}), env: stripeEnv(emulator.url, 20) })
          try {
            await Effect.runPromise(emulator.setFaults({ rateLimitFraction: 0.25, retryAfterSeconds: 0, paths: ["/v1/customers"], seed: 7 }))
            emulator.resetCounters()
            const key = await tenant(limited, emulator)
            const r = await migrate(limited, key, {})
            const statuses = emulator.statusCounts()
            if (r.status !== "completed" || r.counts["mapped"] !== n) throw new Error(`rate-limited run: ${JSON.stringify(r)}`)
            results.push({
              name: `migration under test-mode rate limits (${backend})`,
              value: `${fmt(n / r.seconds)} customers/s`,
              detail: `${fmt(n)} mapped exactly in ${fmt(r.seconds, 2)} s; ${statuses["429"] ?? 0} × 429 absorbed by retries, ${statuses["200"] ?? 0} list requests answered; limiter 20 req/s`
            })
          } finally {
            emulator.resetFaults()
            await limited.dispose()
          }
        })
      })
    )
  )
  return results
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const customers = Number(process.argv[2] ?? "5000")
  const postgresUrl = process.argv[3]
  benchMigration({ customers, ...(postgresUrl ? { postgresUrl } : {}) }).then(
    (results) => {
      console.log(`machine: ${machine()}`)
      for (const r of results) console.log(`${r.name}: ${r.value} — ${r.detail}`)
    },
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}

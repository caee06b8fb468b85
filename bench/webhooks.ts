/**
 * Webhook latency: signs and posts N real Stripe payloads to the embedded service (PGlite, or
 * PostgreSQL with --postgres URL) over loopback HTTP and prints p50/p95/p99.
 *
 *   npx tsx bench/webhooks.ts [--n 1000] [--concurrency 1] [--postgres postgres://...]
 *
 * Mix: 60% customer.created with external_id (customer + mapping created), 20% customer.updated
 * of an already linked customer, 10% duplicates of earlier events, 10% ignored types.
 */
import { HttpServer } from "@effect/platform"
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer, LogLevel, ManagedRuntime, Redacted, Scope } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeServerLive } from "../src/http/Server.js"
import { localService } from "../src/LocalService.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"
import { makeStripeEmulator, signatureHeader } from "../src/stripe-emulator/index.js"

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}
const N = Number(arg("n", "1000"))
const CONCURRENCY = Number(arg("concurrency", "1"))
const POSTGRES = arg("postgres", "")
const API_KEY = "sk_test_bench000000000000000000004242"
const SECRET = `whsec_${randomBytes(16).toString("hex")}`

const adminSql = (url: string, statement: string) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })), (ctx) =>
        Effect.provide(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(statement)), ctx)
      )
    )
  )

const pct = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

const main = async () => {
  const scope = await Effect.runPromise(Scope.make())
  const emulator = await Effect.runPromise(Scope.extend(makeStripeEmulator({ apiKey: Redacted.make(API_KEY), rateLimits: "off" /* bench: test-mode 25 req/s lifted */ }), scope))
  const env: Record<string, string> = {
    FLEXPRICE_HTTP_ADDR: "127.0.0.1:0",
    FLEXPRICE_SCHEDULE_ENABLED: "false",
    FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}`,
    STRIPE_API_BASE: emulator.url,
    STRIPE_METER_EVENTS_API_BASE: emulator.url
  }
  const cleanups: Array<() => Promise<unknown>> = []
  if (POSTGRES !== "") {
    const name = `fp_bench_wh_${Date.now().toString(36)}`
    await adminSql(POSTGRES, `CREATE DATABASE ${name}`)
    const u = new URL(POSTGRES)
    u.pathname = `/${name}`
    env["FLEXPRICE_DATABASE_URL"] = u.toString()
    cleanups.push(() => adminSql(POSTGRES, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  } else {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-bench-wh-"))
    env["FLEXPRICE_DATA_DIR"] = dir
    cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
  }
  const runtime = ManagedRuntime.make(
    localService({ server: NodeServerLive, settings: env, processEnvironment: false, beside: Layer.empty, below: Layer.empty, logLevel: LogLevel.Warning })
  )
  try {
    const address = await runtime.runPromise(Effect.map(HttpServer.HttpServer, (s) => s.address))
    const base = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
    const tenant = await runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create("bench-webhooks", "test")))
    const put = await fetch(`${base}/v1/stripe/config`, {
      method: "PUT",
      headers: { "x-api-key": tenant.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ api_key: API_KEY, webhook_secret: SECRET })
    })
    if (put.status !== 200) throw new Error(`config: ${put.status} ${await put.text()}`)
    const url = `${base}/webhooks/stripe/${tenant.tenantId}/${tenant.environmentId}`

    const payloads: Array<{ kind: string; body: string }> = []
    for (let i = 0; i < N; i++) {
      const r = i % 10
      const created = Math.floor(Date.now() / 1000)
      if (r < 6 || i < 10) {
        payloads.push({
          kind: "created",
          body: JSON.stringify({
            id: `evt_bench_${i}`,
            object: "event",
            type: "customer.created",
            created,
            livemode: false,
            data: { object: { id: `cus_bench_${i}`, object: "customer", name: `Customer ${i}`, email: `c${i}@example.com`, metadata: { external_id: `bench-${i}` } } }
          })
        })
      } else if (r < 8) {
        const j = i - 10 - (i % 10) // a customer created earlier
        payloads.push({
          kind: "updated",
          body: JSON.stringify({
            id: `evt_bench_${i}`,
            type: "customer.updated",
            created,
            data: { object: { id: `cus_bench_${j}`, name: `Renamed ${j}`, metadata: { external_id: `bench-${j}` } } }
          })
        })
      } else if (r < 9) {
        payloads.push({ kind: "duplicate", body: payloads[i - 5]!.body })
      } else {
        payloads.push({ kind: "ignored", body: JSON.stringify({ id: `evt_bench_${i}`, type: "invoice.paid", created, data: { object: { id: `in_${i}` } } }) })
      }
    }

    // warm-up (connections, JIT, caches): not measured
    for (let i = 0; i < 20; i++) {
      const body = JSON.stringify({ id: `evt_warm_${i}`, type: "invoice.paid", data: { object: { id: `in_w${i}` } } })
      await fetch(url, { method: "POST", headers: { "content-type": "application/json", "stripe-signature": signatureHeader(body, [SECRET], Math.floor(Date.now() / 1000)) }, body })
    }

    const latencies: Array<number> = []
    const byKind = new Map<string, Array<number>>()
    const statuses = new Map<number, number>()
    let next = 0
    const started = performance.now()
    const worker = async () => {
      for (;;) {
        const i = next++
        if (i >= payloads.length) return
        const p = payloads[i]!
        const sig = signatureHeader(p.body, [SECRET], Math.floor(Date.now() / 1000))
        const t0 = performance.now()
        const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", "stripe-signature": sig }, body: p.body })
        await res.arrayBuffer()
        const ms = performance.now() - t0
        latencies.push(ms)
        byKind.set(p.kind, [...(byKind.get(p.kind) ?? []), ms])
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
    const elapsed = (performance.now() - started) / 1000
    const fmt = (xs: Array<number>) => {
      const s = [...xs].sort((a, b) => a - b)
      return `n=${s.length} p50=${pct(s, 50).toFixed(2)}ms p95=${pct(s, 95).toFixed(2)}ms p99=${pct(s, 99).toFixed(2)}ms max=${s[s.length - 1]!.toFixed(2)}ms`
    }
    console.log(`webhooks bench: backend=${POSTGRES ? "postgres" : "pglite"} n=${N} concurrency=${CONCURRENCY} node=${process.version}`)
    console.log(`  all        ${fmt(latencies)}  throughput=${(N / elapsed).toFixed(1)}/s`)
    for (const [k, xs] of byKind) console.log(`  ${k.padEnd(10)} ${fmt(xs)}`)
    console.log(`  statuses   ${JSON.stringify(Object.fromEntries(statuses))}`)
  } finally {
    await runtime.dispose()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    for (const c of cleanups) await c().catch(() => undefined)
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

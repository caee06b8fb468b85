/**
 * Stripe emulator benchmark (not a test: nothing is asserted about time).
 *
 *   npx tsx bench/emulator.ts [streamRequests=1000] [v1Calls=10000]
 *
 * Drives the emulator on loopback with the official `stripe` SDK (no retries):
 * - v2 stream: one session, `streamRequests` requests of 100 events each, 8 in flight;
 * - v1: `v1Calls` POST /v1/billing/meter_events, 16 in flight;
 * - event summaries: one hourly listing per customer.
 * It measures the emulator plus the SDK's client cost, i.e. the ceiling the sync pipeline sees.
 */
import { Effect } from "effect"
import { pathToFileURL } from "node:url"
import Stripe from "stripe"
import { makeStripeEmulator } from "../src/stripe-emulator/index.js"

export interface BenchResult {
  readonly name: string
  readonly value: string
  readonly detail: string
}

const KEY = "sk_test_bench_emulator_0000"
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

/** Runs `total` tasks with at most `width` in flight. */
const pool = async (total: number, width: number, task: (i: number) => Promise<unknown>) => {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < total) await task(next++)
    })
  )
}

const percentile = (xs: Array<number>, p: number) => xs.sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!

export const benchEmulator = (options: { readonly streamRequests?: number; readonly v1Calls?: number } = {}) =>
  Effect.scoped(
    Effect.gen(function* () {
      const streamRequests = options.streamRequests ?? 1_000
      const v1Calls = options.v1Calls ?? 10_000
      const emu = yield* makeStripeEmulator({ apiKey: KEY, rateLimits: "off" /* throughput bench: Stripe's test-mode 25 req/s lifted */ })
      const customers: Array<string> = []
      for (let i = 0; i < 100; i++) customers.push((yield* emu.createCustomer({ name: `c${i}` })).id)
      const meter = yield* emu.createMeter({ display_name: "bench", event_name: "bench", default_aggregation: { formula: "sum" } })
      const stripe = new Stripe(KEY, { host: emu.host, port: emu.port, protocol: "http", maxNetworkRetries: 0, telemetry: false })
      const results: Array<BenchResult> = []

      const stream = yield* Effect.promise(async () => {
        const session = await stripe.v2.billing.meterEventSession.create()
        const ts = new Date(Date.now() - 60_000).toISOString()
        const latencies: Array<number> = []
        const t0 = performance.now()
        await pool(streamRequests, 8, async (r) => {
          const events = Array.from({ length: 100 }, (_, i) => ({
            event_name: "bench",
            identifier: `s-${r}-${i}`,
            timestamp: ts,
            payload: { stripe_customer_id: customers[(r * 100 + i) % customers.length]!, value: "1.5" }
          }))
          const t = performance.now()
          await stripe.v2.billing.meterEventStream.create({ events }, { apiKey: session.authentication_token })
          latencies.push(performance.now() - t)
        })
        return { secs: (performance.now() - t0) / 1000, latencies }
      })
      const streamEvents = streamRequests * 100
      results.push({
        name: "v2 stream",
        value: `${fmt(streamEvents / stream.secs)} events/s`,
        detail: `${fmt(streamRequests)} requests x 100 events, 8 in flight, ${fmt(streamRequests / stream.secs)} req/s, p50 ${fmt(percentile(stream.latencies, 0.5), 1)} ms, p99 ${fmt(percentile(stream.latencies, 0.99), 1)} ms`
      })

      const v1 = yield* Effect.promise(async () => {
        const latencies: Array<number> = []
        const t0 = performance.now()
        await pool(v1Calls, 16, async (i) => {
          const t = performance.now()
          await stripe.billing.meterEvents.create({
            event_name: "bench",
            identifier: `v1-${i}`,
            payload: { stripe_customer_id: customers[i % customers.length]!, value: "2" }
          })
          latencies.push(performance.now() - t)
        })
        return { secs: (performance.now() - t0) / 1000, latencies }
      })
      results.push({
        name: "v1 meter_events",
        value: `${fmt(v1Calls / v1.secs)} events/s`,
        detail: `${fmt(v1Calls)} calls, 16 in flight, p50 ${fmt(percentile(v1.latencies, 0.5), 1)} ms, p99 ${fmt(percentile(v1.latencies, 0.99), 1)} ms`
      })

      const summaries = yield* Effect.promise(async () => {
        const end = Math.ceil(Date.now() / 3_600_000) * 3600
        const t0 = performance.now()
        for (const c of customers) {
          await stripe.billing.meters.listEventSummaries(meter.id, {
            customer: c,
            start_time: end - 2 * 3600,
            end_time: end,
            value_grouping_window: "hour"
          })
        }
        return (performance.now() - t0) / 1000
      })
      results.push({
        name: "event summaries",
        value: `${fmt(customers.length / summaries)} calls/s`,
        detail: `${customers.length} hourly listings`
      })

      const expected = streamEvents + v1Calls
      const accepted = emu.state.meterEvents().length
      const calls = emu.callCounts()
      results.push({
        name: "accounting",
        value: `${fmt(accepted)} accepted`,
        detail: `expected ${fmt(expected)}; stream calls ${calls["POST /v2/billing/meter_event_stream"] ?? 0}, session calls ${calls["POST /v2/billing/meter_event_session"] ?? 0}, v1 calls ${calls["POST /v1/billing/meter_events"] ?? 0}; heap ${fmt(process.memoryUsage().heapUsed / 2 ** 20)} MiB`
      })
      if (accepted !== expected) throw new Error(`accepted ${accepted} events, expected ${expected}`)
      return results
    })
  )

export const printResults = (results: ReadonlyArray<BenchResult>) => {
  const w1 = Math.max(...results.map((r) => r.name.length))
  const w2 = Math.max(...results.map((r) => r.value.length))
  console.log(`Stripe emulator on loopback (node ${process.version}, stripe-node ${Stripe.PACKAGE_VERSION})`)
  for (const r of results) console.log(`${r.name.padEnd(w1)}  ${r.value.padStart(w2)}  ${r.detail}`)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const streamRequests = process.argv[2] ? Number(process.argv[2]) : undefined
  const v1Calls = process.argv[3] ? Number(process.argv[3]) : undefined
  Effect.runPromise(
    benchEmulator({ ...(streamRequests ? { streamRequests } : {}), ...(v1Calls ? { v1Calls } : {}) })
  ).then(printResults, (e) => {
    console.error(e)
    process.exit(1)
  })
}

/**
 * StripeClient benchmark (not a test: nothing is asserted about time).
 *
 *   npx tsx bench/stripe.ts [aggregates=10000] [v1Events=2000]
 *
 * Runs the real StripeClient (SDK, retries, limiter, semaphore, breaker, spans, metrics) against
 * the emulator on loopback and reports:
 * - meter events/s through the v2 stream path (100 events a request, one session);
 * - meter events/s through v1 (one call per event, distinct customers in parallel);
 * - Stripe calls used per 10,000 aggregates on each path (counted at the emulator).
 * The client's rate limits are raised for the throughput runs so the figure is the client's own
 * cost; the Stripe-imposed ceilings at the default limits are printed beside them.
 */
import { Effect, Redacted } from "effect"
import { pathToFileURL } from "node:url"
import Stripe from "stripe"
import { makeStripeEmulator } from "../src/stripe-emulator/index.js"
import { type MeterEvent, makeStripeClient } from "../src/stripe/StripeClient.js"
import { emulatorSettings } from "../src/stripe/StripeSettings.js"

export interface BenchResult {
  readonly name: string
  readonly value: string
  readonly detail: string
}

const KEY = "sk_test_bench_stripe_client_0000"
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

export const benchStripe = (options: { readonly aggregates?: number; readonly v1Events?: number } = {}) =>
  Effect.scoped(
    Effect.gen(function* () {
      const aggregates = options.aggregates ?? 10_000
      const v1Events = options.v1Events ?? 2_000
      const emulator = yield* makeStripeEmulator({ apiKey: KEY, now: () => Date.now(), rateLimits: "off" /* bench: test-mode 25 req/s lifted */ })
      const client = yield* makeStripeClient(
        emulatorSettings(emulator.url, {
          rateLimitTestPerSecond: 100_000,
          meterStreamRateLimitPerSecond: 100_000,
          maxConcurrency: 16
        })
      )
      const ref = { tenantKey: "bench/env", apiKey: Redacted.make(KEY), livemode: false }
      yield* emulator.createMeter({ display_name: "Calls", event_name: "api_calls", default_aggregation: { formula: "sum" } })
      const customers: Array<string> = []
      for (let i = 0; i < 500; i++) customers.push((yield* emulator.createCustomer({ name: `bench ${i}` })).id)
      const windowStart = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000)
      const event = (prefix: string, i: number): MeterEvent => ({
        eventName: "api_calls",
        identifier: `${prefix}-${i}`,
        timestamp: windowStart,
        payload: { stripe_customer_id: customers[i % customers.length]!, value: "1.5" }
      })

      // Warm-up: SDK instances, tenant state, keep-alive sockets.
      yield* client.retrieveAccount(ref)
      emulator.resetCounters()

      // v2 stream: the aggregates of one hourly run, sent as the pipeline sends them.
      const stream = Array.from({ length: aggregates }, (_, i) => event("s", i))
      const t0 = performance.now()
      yield* client.sendMeterEventsStream(ref, stream)
      const streamMs = performance.now() - t0
      const streamCalls = emulator.totalCalls()
      emulator.resetCounters()

      // Baseline first (warms the emulator's v1 path too): the bare SDK, same width, no client machinery.
      const u = new URL(emulator.url)
      const bare = new Stripe(KEY, { host: u.hostname, port: u.port, protocol: "http", maxNetworkRetries: 0, telemetry: false })
      const baseline = Array.from({ length: v1Events }, (_, i) => event("b", i))
      const t2 = performance.now()
      yield* Effect.forEach(
        baseline,
        (e) =>
          Effect.promise(() =>
            bare.billing.meterEvents.create(
              {
                event_name: e.eventName,
                identifier: e.identifier,
                payload: { ...e.payload },
                timestamp: Math.floor(e.timestamp.getTime() / 1000)
              },
              { idempotencyKey: e.identifier }
            )
          ),
        { concurrency: 16, discard: true }
      )
      const bareMs = performance.now() - t2

      emulator.resetCounters()

      // v1: one call per aggregate; distinct customers run in parallel (16 permits).
      const v1 = Array.from({ length: v1Events }, (_, i) => event("v", i))
      const t1 = performance.now()
      yield* Effect.forEach(v1, (e) => client.sendMeterEventV1(ref, e), { concurrency: 32, discard: true })
      const v1Ms = performance.now() - t1
      const v1Calls = emulator.totalCalls()

      const streamRate = (aggregates / streamMs) * 1000
      const v1Rate = (v1Events / v1Ms) * 1000
      const streamPer10k = Math.ceil((streamCalls / aggregates) * 10_000)
      const v1Per10k = Math.round((v1Calls / v1Events) * 10_000)
      const results: Array<BenchResult> = [
        {
          name: "stripe client: v2 stream",
          value: `${fmt(streamRate)} events/s`,
          detail: `${fmt(aggregates)} events in ${fmt(streamMs)} ms, ${streamCalls} HTTP calls (incl. 1 session)`
        },
        {
          name: "stripe client: v1 meter_events",
          value: `${fmt(v1Rate)} events/s`,
          detail: `${fmt(v1Events)} events in ${fmt(v1Ms)} ms, ${v1Calls} HTTP calls, 32 callers / 16 permits`
        },
        {
          name: "bare stripe SDK v1 (baseline, same run)",
          value: `${fmt((v1Events / bareMs) * 1000)} events/s`,
          detail: `${fmt(v1Events)} events in ${fmt(bareMs)} ms, 16 in flight, no retries/limits/spans/metrics`
        },
        {
          name: "stripe calls per 10,000 aggregates (stream)",
          value: `${streamPer10k}`,
          detail: "100 stream requests (meter-events host) + 1 session (API host)"
        },
        {
          name: "stripe calls per 10,000 aggregates (v1)",
          value: `${fmt(v1Per10k)}`,
          detail: "one call per aggregate; at the default live limit (90/s) ≥ 111 s per 10,000"
        }
      ]
      return results
    })
  )

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [aggregates, v1Events] = process.argv.slice(2).map((s) => Number(s))
  Effect.runPromise(
    benchStripe({
      ...(aggregates && Number.isFinite(aggregates) ? { aggregates } : {}),
      ...(v1Events && Number.isFinite(v1Events) ? { v1Events } : {})
    })
  ).then(
    (results) => {
      for (const r of results) console.log(`${r.name.padEnd(46)} ${r.value.padStart(16)}   ${r.detail}`)
      process.exit(0)
    },
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}

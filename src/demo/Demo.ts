/**
 * `flexprice demo` (SPEC §11): the whole product in one process, on real paths only.
 *
 * - the service is built from the same Layers as `serve` (Service.ts);
 * - the Stripe emulator runs on another free port; the service's Stripe client talks to it over
 *   HTTP (STRIPE_API_BASE / STRIPE_METER_EVENTS_API_BASE) and it sends signed webhooks to the
 *   service's real webhook endpoint;
 * - everything the demo does to the service goes through the HTTP API with fetch (Client.ts),
 *   except creating the tenant (what `flexprice tenant create` does, in process).
 *
 * The phases: tenant and customers (Onboarding.ts), usage, syncs and reconciliation (Sync.ts),
 * the verdict (Checks.ts), the text report (Report.ts). Expected totals come from the generator
 * (exact decimals over what was sent), and are compared with our ledger (sync API) and with what
 * the emulator received.
 */
import { Clock, Console, Effect, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { makeStripeEmulator } from "../stripe-emulator/index.js"
import { checkTotals } from "./Checks.js"
import { makeClient } from "./Client.js"
import type { DemoFailed, DemoOptions, DemoReport } from "./Model.js"
import { onboardCustomers, setupTenant } from "./Onboarding.js"
import { makeProgress } from "./Progress.js"
import { formatReport } from "./Report.js"
import { NO_STRIPE_CUSTOMERS, UNMAPPED_STRIPE_CUSTOMERS, WEBHOOK_SECRET_BYTES } from "./Run.js"
import { startService } from "./Service.js"
import { ingestHour, lateEventsBySchedule, manualSync, reconcile } from "./Sync.js"

export { DemoFailed } from "./Model.js"
export type { DemoOptions, DemoReport, MeterSummary, PhaseTiming, SyncRunSummary } from "./Model.js"
export { promSum } from "./Client.js"

export const runDemo = (options: DemoOptions = {}): Effect.Effect<DemoReport, DemoFailed> =>
  Effect.scoped(
    Effect.gen(function* () {
      const started = yield* Clock.currentTimeMillis
      const nCustomers = Math.max(2, Math.floor(options.customers ?? 200))
      const nEvents = Math.max(1, Math.floor(options.events ?? 60_000))
      const nLate = Math.max(0, Math.floor(options.late ?? Math.max(10, Math.round(nEvents / 100))))
      const faults = options.faults ?? true
      const seed = options.seed ?? 20_240_601
      const printing = options.print ?? true
      const extraEnv = options.env ?? {}
      const lookup = (name: string): string => extraEnv[name] ?? process.env[name] ?? ""

      const stripeKey = `sk_test_demo_${randomBytes(12).toString("hex")}`
      const webhookSecret = `whsec_${randomBytes(WEBHOOK_SECRET_BYTES).toString("hex")}`
      const emulator = yield* makeStripeEmulator({ apiKey: Redacted.make(stripeKey), port: 0, rateLimits: "off" })
      const progress = makeProgress({ started, printing, emulator })
      const service = yield* startService({
        emulatorUrl: emulator.url,
        keep: options.keep ?? false,
        lookup,
        extraEnv,
        ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {})
      })
      const client = makeClient(service.baseUrl)
      const run = { emulator, client, progress }
      yield* progress.say(
        `flexprice demo: ${nCustomers} customers, ${nEvents} events + ${nLate} late, faults ${faults ? "on" : "off"}; Stripe test-mode rate limit (25 req/s) lifted in the emulator`
      )
      yield* progress.phaseDone(
        "start",
        `service on ${service.baseUrl} (${service.backend}); Stripe emulator on ${emulator.url} (account ${emulator.accountId}); schedule every 2 s`
      )

      const tenant = yield* service.createTenant(`demo-${started.toString(36)}-${randomBytes(3).toString("hex")}`)
      const meters = yield* setupTenant(run, tenant, { stripeKey, webhookSecret })
      const customers = yield* onboardCustomers(run, nCustomers)
      const usageCustomers = [...customers.externalIds, ...customers.noStripeIds]
      const hour = yield* ingestHour(run, { seed, count: nEvents, customers: usageCustomers })
      const sync = yield* manualSync(run, { windowStart: hour.windowStart, windowEnd: hour.windowEnd, faults })
      const runs = [...sync.runs]
      const late = yield* lateEventsBySchedule(run, {
        seed,
        count: nLate,
        customers: usageCustomers,
        hourStart: hour.hourStart,
        onTime: hour.usage.totals,
        meters,
        runs
      })
      const rs = yield* reconcile(run, hour)

      const batches = yield* client.listBatches
      const status = yield* client.api("GET", "/v1/stripe/sync/status")
      const verdict = checkTotals({
        emulator,
        meters,
        batches,
        expected: late.expected,
        externalIds: customers.externalIds,
        noStripeIds: customers.noStripeIds,
        stripeIdByExternal: customers.stripeIdByExternal,
        retriedBatchIds: sync.retriedBatchIds,
        webhooks: customers.webhooks,
        reconciliation: rs
      })
      const report: DemoReport = {
        ok: verdict.failures.length === 0,
        failures: verdict.failures,
        backend: service.backend,
        dataDir: service.dataDir,
        serviceUrl: service.baseUrl,
        emulatorUrl: emulator.url,
        window: { start: hour.windowStart, end: hour.windowEnd },
        customers: { onboarded: nCustomers, unmappedStripe: UNMAPPED_STRIPE_CUSTOMERS, withoutStripe: NO_STRIPE_CUSTOMERS },
        webhooks: customers.webhooks,
        ingest: { events: hour.accepted, late: late.lateAccepted, ms: hour.ingestMs, eventsPerSecond: hour.eventsPerSecond },
        runs,
        meters: verdict.meterSummaries,
        pairs: verdict.pairs,
        stripe: {
          callsByPhase: progress.callsByPhase,
          callsByEndpoint: { ...emulator.callCounts() },
          faultResponses: sync.faultResponses,
          clientRetries: sync.clientRetries,
          meterEventsAccepted: emulator.state.meterEvents().length,
          streamErrors: emulator.state.streamErrors().length
        },
        reconciliation: {
          pairs: rs.pairs,
          rows: rs.rows,
          rowsWithDrift: rs.rows_with_drift,
          syncedTotal: rs.synced_total,
          stripeTotal: rs.stripe_total,
          driftTotal: rs.drift_total,
          unavailablePairs: rs.unavailable_pairs
        },
        status,
        phases: progress.phases,
        wallMs: (yield* Clock.currentTimeMillis) - started
      }
      if (printing) yield* Console.log(formatReport(report, { keep: options.keep ?? false }))
      if (printing && options.keep && service.dataDir !== null)
        // Like `flexprice tenant create`, the kept environment's key is printed once, on stdout.
        yield* Console.log(
          `Explore the kept data: FLEXPRICE_DATA_DIR=${service.dataDir} npx tsx src/bin/flexprice.ts serve, then curl -H 'x-api-key: ${tenant.apiKey}' http://127.0.0.1:8080/v1/stripe/sync/batches (the emulator is gone: Stripe calls will fail)`
        )
      return report
    })
  )

/**
 * A dead or failing scheduler is visible: runs counted by outcome, the fleet-wide last successful
 * run exported from the run log, a heartbeat from the scheduler loop, Sentry reports for failed
 * runs, failed migrations and undecryptable keys (which also count in flexprice_errors_total),
 * and the Stripe requests each run made counted per tenant for the call budget.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { expect } from "vitest"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { SyncHealth } from "../../src/sync/SyncHealth.js"
import { SyncScheduler } from "../../src/sync/SyncScheduler.js"
import { SyncService } from "../../src/sync/SyncService.js"
import { SentryEnvelopes, withSentry } from "../support/sentry.js"
import { ApiClient, asServed, inTestTenant, TestTenant } from "../support/TestApp.js"
import { hoursAgo, STRIPE_KEY } from "../sync/support.js"
import { configure, customer, ingest, meter, sync, SyncEmulator, syncLayer } from "../sync/syncLayer.js"

/** The service reporting to a stand-in Sentry, over the in-memory metric reader, configured before the tests. */
const reported = withSentry(7, (dsn) =>
  Layer.effectDiscard(configure()).pipe(Layer.provideMerge(syncLayer({ env: { SENTRY_DSN: dsn } })), Layer.provideMerge(Telemetry.layerTest))
)

const value = (name: string, tags?: Record<string, string>) => Effect.flatMap(TelemetryTest, (t) => t.metricValue(name, tags))
const histogramSum = (name: string) =>
  Effect.flatMap(TelemetryTest, (t) => Effect.map(t.metricPoints(name), (ps) => ps.reduce((n, p) => n + (p.sum ?? 0), 0)))

/** The first envelope containing every needle, waiting for it up to 10 s; undefined if none came. */
const envelopeWith = (...needles: Array<string>) =>
  Effect.gen(function* () {
    const envelopes = yield* SentryEnvelopes
    for (let i = 0; i < 100; i++) {
      const hit = envelopes.find((e) => needles.every((n) => e.body.includes(n)))
      if (hit !== undefined) return hit.body
      yield* Effect.sleep("100 millis")
    }
    return undefined
  })

const rename = (from: string, to: string) => Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(`ALTER TABLE ${from} RENAME TO ${to}`))

layer(reported, { excludeTestServices: true })("sync health: runs, last success, heartbeat, Sentry", (it) => {
  it.effect("counts a completed run, its Stripe requests, and exports its finish time as the last success", () =>
    Effect.gen(function* () {
      const emulator = yield* SyncEmulator
      const m = yield* meter("health_calls", { aggregation: "COUNT" })
      // 101 customers with usage in one window → 101 aggregates → ⌈101/100⌉ = 2 stream requests
      const customers = 101
      for (let i = 0; i < customers; i++) yield* customer(`hc${i}`)
      yield* ingest(
        Array.from({ length: customers }, (_, i) => ({
          event_id: `he${i}`,
          event_name: m.eventName,
          external_customer_id: `hc${i}`,
          timestamp: hoursAgo(2)
        }))
      )
      const before = {
        completed: yield* value("flexprice_sync_runs_total", { status: "completed" }),
        requests: yield* value("flexprice_sync_stripe_requests_total"),
        groups: yield* histogramSum("flexprice_aggregation_result_groups"),
        ingestLagSum: yield* histogramSum("flexprice_sync_ingest_lag_seconds"),
        ingestLagCount: yield* value("flexprice_sync_ingest_lag_seconds")
      }
      const calls = emulator.totalCalls()
      const t0 = yield* Clock.currentTimeMillis
      const report = yield* sync()
      const t1 = yield* Clock.currentTimeMillis
      expect(report.status).toBe("completed")
      expect(report.batchesSynced).toBe(customers)
      const expectedRequests = Number((BigInt(customers) + 99n) / 100n)
      expect(report.stripeRequests).toBe(expectedRequests)
      expect((yield* value("flexprice_sync_runs_total", { status: "completed" })) - before.completed).toBe(1)
      // the budget spends every request Stripe received: the stream requests and their session
      const received = emulator.totalCalls() - calls
      expect(received).toBeGreaterThanOrEqual(expectedRequests)
      expect((yield* value("flexprice_sync_stripe_requests_total")) - before.requests).toBe(received)
      expect(yield* value("flexprice_sync_stripe_requests_last_hour")).toBe(received)
      // one window, one aggregate group per customer
      expect((yield* histogramSum("flexprice_aggregation_result_groups")) - before.groups).toBe(customers)
      // ingestion → synced, worst case per batch: from the window start (first pass), at sync time
      const windowStart = Date.parse(hoursAgo(2))
      expect((yield* value("flexprice_sync_ingest_lag_seconds")) - before.ingestLagCount).toBe(customers)
      const lagSum = (yield* histogramSum("flexprice_sync_ingest_lag_seconds")) - before.ingestLagSum
      expect(lagSum).toBeGreaterThanOrEqual((customers * (t0 - windowStart)) / 1000 - 1e-6)
      expect(lagSum).toBeLessThanOrEqual((customers * (t1 - windowStart)) / 1000 + 1e-6)

      yield* Effect.flatMap(SyncHealth, (s) => s.publish)
      const last = (yield* value("flexprice_sync_last_success_timestamp_seconds")) * 1000
      expect(last).toBeGreaterThanOrEqual(t0)
      expect(last).toBeLessThanOrEqual(t1)
    })
  )

  it.effect("a failed run is counted as failed and reported to Sentry", () =>
    Effect.gen(function* () {
      const before = yield* value("flexprice_sync_runs_total", { status: "failed" })
      // the run log's table gone for this one run, put back whatever happens
      const outcome = yield* Effect.acquireUseRelease(
        rename("stripe_sync_runs", "stripe_sync_runs_gone"),
        () =>
          inTestTenant(
            Effect.gen(function* () {
              const config = yield* Effect.flatMap(StripeConfigRepo, (r) => r.get)
              if (config._tag === "None") return yield* Effect.dieMessage("not configured")
              return yield* Effect.flatMap(SyncService, (s) => s.outcomeOf(config.value, { trigger: "schedule" }))
            })
          ),
        () => Effect.orDie(rename("stripe_sync_runs_gone", "stripe_sync_runs"))
      )
      expect(outcome.report).toBeNull()
      expect(outcome.error).toBe("SqlError")
      expect((yield* value("flexprice_sync_runs_total", { status: "failed" })) - before).toBe(1)
      const envelope = yield* envelopeWith("sync_run_SqlError", (yield* TestTenant).scope.tenantId)
      expect(envelope).toBeDefined()
      expect(envelope).not.toContain(STRIPE_KEY)
    })
  )

  it.effect("a migration that fails is reported to Sentry with its id", () =>
    Effect.gen(function* () {
      const emulator = yield* SyncEmulator
      const api = yield* ApiClient
      yield* emulator.setFaults({ outageForMs: 60_000 })
      // a dry run with the API's defaults (the typed client sends them explicitly)
      const [started, response] = yield* api.stripeMigration.start({
        payload: { dry_run: true, create_missing_customers: true, conflict_strategy: "skip" },
        withResponse: true
      })
      expect(response.status).toBe(202)
      const id = started.migration_id
      let status = ""
      for (let i = 0; i < 100 && status !== "failed"; i++) {
        status = (yield* api.stripeMigration.status({ path: { migration_id: id } })).status
        if (status !== "failed") yield* Effect.sleep("100 millis")
      }
      expect(status).toBe("failed")
      const envelope = yield* envelopeWith(id, "migration", (yield* TestTenant).scope.tenantId)
      expect(envelope).toBeDefined()
      expect(envelope).not.toContain(STRIPE_KEY)
    }).pipe(Effect.ensuring(Effect.flatMap(SyncEmulator, (e) => e.setFaults({}))))
  )

  it.effect("an undecryptable key — changed by anyone, the cache notwithstanding — is counted and reported", () =>
    Effect.gen(function* () {
      const { scope } = yield* TestTenant
      const sql = yield* PgClient.PgClient
      // warm the decrypted-key cache, then damage the stored ciphertext behind the service's back
      yield* sync()
      yield* sql`UPDATE stripe_tenant_configs SET api_key_encrypted = left(api_key_encrypted, length(api_key_encrypted) - 8) || 'AAAAAAAA'
        WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`
      const before = yield* value("flexprice_errors_total", { code: "decryption_failed", area: "config" })
      const report = yield* sync()
      expect(report.status).toBe("partial")
      expect(report.error).toBe("decryption_failed")
      expect((yield* value("flexprice_errors_total", { code: "decryption_failed", area: "config" })) - before).toBe(1)
      const envelope = yield* envelopeWith("decryption_failed", scope.tenantId)
      expect(envelope).toBeDefined()
      expect(envelope).not.toContain(STRIPE_KEY)
    })
  )
})

/** The service with its scheduler (a pass every second), over the in-memory metric reader. */
const scheduled = asServed(SyncScheduler.layer).pipe(
  Layer.provideMerge(syncLayer({ env: { FLEXPRICE_SCHEDULE_ENABLED: "true", FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: "1" } })),
  Layer.provideMerge(Telemetry.layerTest)
)

layer(scheduled, { excludeTestServices: true })("the scheduler loop's heartbeat and health gauges", (it) => {
  it.effect("bumps the heartbeat on every pass and publishes the last success", () =>
    Effect.gen(function* () {
      yield* configure()
      const t0 = yield* Clock.currentTimeMillis
      let beat = 0
      let last = 0
      for (let i = 0; i < 100 && !(beat * 1000 >= t0 && last * 1000 >= t0); i++) {
        yield* Effect.sleep("100 millis")
        beat = yield* value("flexprice_sync_scheduler_heartbeat_timestamp_seconds")
        last = yield* value("flexprice_sync_last_success_timestamp_seconds")
      }
      expect(beat * 1000).toBeGreaterThanOrEqual(t0)
      expect(last * 1000).toBeGreaterThanOrEqual(t0)
      expect(yield* value("flexprice_sync_runs_total")).toBeGreaterThan(0)
    })
  )
})

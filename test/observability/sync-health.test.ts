/**
 * A dead or failing scheduler is visible: runs counted by outcome, the fleet-wide last successful
 * run exported from the run log, a heartbeat from the scheduler loop, Sentry reports for failed
 * runs, failed migrations and undecryptable keys (which also count in flexprice_errors_total),
 * and the Stripe requests each run made counted per tenant for the call budget.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Telemetry, TelemetryTest, type TelemetryTestService } from "../../src/observability/Telemetry.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { SyncHealth } from "../../src/sync/SyncHealth.js"
import { SyncScheduler } from "../../src/sync/SyncScheduler.js"
import { SyncService } from "../../src/sync/SyncService.js"
import { hoursAgo, startSyncHarness, STRIPE_KEY, type SyncHarness } from "../sync/support.js"

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe("sync health: runs, last success, heartbeat, Sentry", () => {
  let sentry: http.Server
  const envelopes: Array<string> = []
  let h: SyncHarness
  let telemetry: TelemetryTestService | undefined
  const value = (name: string, tags?: Record<string, string>) => Effect.runPromise(telemetry!.metricValue(name, tags))
  const histogramSum = (name: string) =>
    Effect.runPromise(Effect.map(telemetry!.metricPoints(name), (ps) => ps.reduce((n, p) => n + (p.sum ?? 0), 0)))
  /** Waits for an envelope containing every needle. */
  const envelopeWith = async (...needles: Array<string>) => {
    for (let i = 0; i < 100; i++) {
      const hit = envelopes.find((e) => needles.every((n) => e.includes(n)))
      if (hit !== undefined) return hit
      await sleep(100)
    }
    return undefined
  }

  beforeAll(async () => {
    sentry = http.createServer((req, res) => {
      let body = ""
      req.on("data", (d) => (body += d))
      req.on("end", () => {
        envelopes.push(body)
        res.end("{}")
      })
    })
    await new Promise<void>((resolve) => sentry.listen(0, "127.0.0.1", resolve))
    const capture = Layer.effectDiscard(Effect.map(TelemetryTest, (t) => void (telemetry = t)))
    h = await startSyncHarness({
      env: { SENTRY_DSN: `http://publickey@127.0.0.1:${(sentry.address() as AddressInfo).port}/7` },
      extra: capture.pipe(Layer.provide(Telemetry.layerTest))
    })
    await h.configure()
  })
  afterAll(async () => {
    await h?.dispose()
    await new Promise<void>((resolve) => sentry.close(() => resolve()))
  })

  it("counts a completed run, its Stripe requests, and exports its finish time as the last success", async () => {
    const m = await h.meter("health_calls", { aggregation: "COUNT" })
    // 101 customers with usage in one window → 101 aggregates → ⌈101/100⌉ = 2 stream requests
    const customers = 101
    for (let i = 0; i < customers; i++) await h.customer(`hc${i}`)
    await h.ingest(
      Array.from({ length: customers }, (_, i) => ({
        event_id: `he${i}`,
        event_name: m.eventName,
        external_customer_id: `hc${i}`,
        timestamp: hoursAgo(2)
      }))
    )
    const before = {
      completed: await value("flexprice_sync_runs_total", { status: "completed" }),
      requests: await value("flexprice_sync_stripe_requests_total"),
      groups: await histogramSum("flexprice_aggregation_result_groups"),
      ingestLagSum: await histogramSum("flexprice_sync_ingest_lag_seconds"),
      ingestLagCount: await value("flexprice_sync_ingest_lag_seconds")
    }
    const calls = h.emulator.totalCalls()
    const t0 = Date.now()
    const report = await h.sync()
    const t1 = Date.now()
    expect(report.status).toBe("completed")
    expect(report.batchesSynced).toBe(customers)
    const expectedRequests = Number((BigInt(customers) + 99n) / 100n)
    expect(report.stripeRequests).toBe(expectedRequests)
    expect((await value("flexprice_sync_runs_total", { status: "completed" })) - before.completed).toBe(1)
    // the budget spends every request Stripe received: the stream requests and their session
    const received = h.emulator.totalCalls() - calls
    expect(received).toBeGreaterThanOrEqual(expectedRequests)
    expect((await value("flexprice_sync_stripe_requests_total")) - before.requests).toBe(received)
    expect(await value("flexprice_sync_stripe_requests_last_hour")).toBe(received)
    // one window, one aggregate group per customer
    expect((await histogramSum("flexprice_aggregation_result_groups")) - before.groups).toBe(customers)
    // ingestion → synced, worst case per batch: from the window start (first pass), at sync time
    const windowStart = Date.parse(hoursAgo(2))
    expect((await value("flexprice_sync_ingest_lag_seconds")) - before.ingestLagCount).toBe(customers)
    const lagSum = (await histogramSum("flexprice_sync_ingest_lag_seconds")) - before.ingestLagSum
    expect(lagSum).toBeGreaterThanOrEqual((customers * (t0 - windowStart)) / 1000 - 1e-6)
    expect(lagSum).toBeLessThanOrEqual((customers * (t1 - windowStart)) / 1000 + 1e-6)

    await h.app.run(Effect.flatMap(SyncHealth, (s) => s.publish))
    const last = (await value("flexprice_sync_last_success_timestamp_seconds")) * 1000
    expect(last).toBeGreaterThanOrEqual(t0)
    expect(last).toBeLessThanOrEqual(t1)
  })

  it("a failed run is counted as failed and reported to Sentry", async () => {
    const before = await value("flexprice_sync_runs_total", { status: "failed" })
    const rename = (from: string, to: string) =>
      h.app.run(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(`ALTER TABLE ${from} RENAME TO ${to}`)))
    await rename("stripe_sync_runs", "stripe_sync_runs_gone")
    try {
      const outcome = await h.asTenant(
        Effect.gen(function* () {
          const config = yield* Effect.flatMap(StripeConfigRepo, (r) => r.get)
          if (config._tag === "None") return yield* Effect.die("not configured")
          return yield* Effect.flatMap(SyncService, (s) => s.outcomeOf(config.value, { trigger: "schedule" }))
        })
      )
      expect(outcome.report).toBeNull()
      expect(outcome.error).toBe("SqlError")
    } finally {
      await rename("stripe_sync_runs_gone", "stripe_sync_runs")
    }
    expect((await value("flexprice_sync_runs_total", { status: "failed" })) - before).toBe(1)
    const envelope = await envelopeWith("sync_run_SqlError", h.scope.tenantId)
    expect(envelope).toBeDefined()
    expect(envelope).not.toContain(STRIPE_KEY)
  })

  it("a migration that fails is reported to Sentry with its id", async () => {
    await Effect.runPromise(h.emulator.setFaults({ outageForMs: 60_000 }))
    try {
      const started = await h.app.request("POST", "/v1/stripe/migrate/customers", { dry_run: true })
      expect(started.status).toBe(202)
      const id = started.data.migration_id as string
      let status = ""
      for (let i = 0; i < 100 && status !== "failed"; i++) {
        status = (await h.app.request("GET", `/v1/stripe/migrate/status/${id}`)).data.status
        if (status !== "failed") await sleep(100)
      }
      expect(status).toBe("failed")
      const envelope = await envelopeWith(id, "migration", h.scope.tenantId)
      expect(envelope).toBeDefined()
      expect(envelope).not.toContain(STRIPE_KEY)
    } finally {
      await Effect.runPromise(h.emulator.setFaults({}))
    }
  })

  it("an undecryptable key — changed by anyone, the cache notwithstanding — is counted and reported", async () => {
    // warm the decrypted-key cache, then damage the stored ciphertext behind the service's back
    await h.sync()
    await h.app.run(
      Effect.flatMap(PgClient.PgClient, (sql) =>
        sql`UPDATE stripe_tenant_configs SET api_key_encrypted = left(api_key_encrypted, length(api_key_encrypted) - 8) || 'AAAAAAAA'
          WHERE tenant_id = ${h.scope.tenantId} AND environment_id = ${h.scope.environmentId}`
      )
    )
    const before = await value("flexprice_errors_total", { code: "decryption_failed", area: "config" })
    const report = await h.sync()
    expect(report.status).toBe("partial")
    expect(report.error).toBe("decryption_failed")
    expect((await value("flexprice_errors_total", { code: "decryption_failed", area: "config" })) - before).toBe(1)
    const envelope = await envelopeWith("decryption_failed", h.scope.tenantId)
    expect(envelope).toBeDefined()
    expect(envelope).not.toContain(STRIPE_KEY)
  })
})

describe("the scheduler loop's heartbeat and health gauges", () => {
  let h: SyncHarness | undefined
  afterAll(async () => {
    await h?.dispose()
  })

  it("bumps the heartbeat on every pass and publishes the last success", async () => {
    let telemetry: TelemetryTestService | undefined
    const capture = Layer.effectDiscard(Effect.map(TelemetryTest, (t) => void (telemetry = t)))
    h = await startSyncHarness({
      env: { FLEXPRICE_SCHEDULE_ENABLED: "true", FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: "1" },
      extra: Layer.merge(capture.pipe(Layer.provide(Telemetry.layerTest)), SyncScheduler.layer)
    })
    const value = (name: string) => Effect.runPromise(telemetry!.metricValue(name))
    await h.configure()
    const t0 = Date.now()
    let beat = 0
    let last = 0
    for (let i = 0; i < 100 && !(beat * 1000 >= t0 && last * 1000 >= t0); i++) {
      await sleep(100)
      beat = await value("flexprice_sync_scheduler_heartbeat_timestamp_seconds")
      last = await value("flexprice_sync_last_success_timestamp_seconds")
    }
    expect(beat * 1000).toBeGreaterThanOrEqual(t0)
    expect(last * 1000).toBeGreaterThanOrEqual(t0)
    expect(await value("flexprice_sync_runs_total")).toBeGreaterThan(0)
  })
})

/**
 * Demo phases 3–5: one closed hour of usage through the bulk API, a manual sync under injected
 * Stripe faults, late events picked up by the schedule, and the reconciliation against Stripe.
 */
import { Clock, Duration, Effect } from "effect"
import * as Decimal from "../domain/Decimal.js"
import { fail } from "./Client.js"
import { generateUsage, HOUR_MS, type Totals, type UsageEvent } from "./Generator.js"
import type { BatchView, ManualSyncAnswer, ReconciliationSummary, SyncRunSummary, SyncRunView } from "./Model.js"
import type { DemoMeter } from "./Onboarding.js"
import type { DemoRun } from "./Run.js"

const STRIPE_PATHS = ["/v2/billing/"]
const INGEST_CHUNK = 1000
const INGEST_IN_FLIGHT = 4

const diffCounts = (after: Readonly<Record<string, number>>, before: Readonly<Record<string, number>>) => {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0)
    if (d !== 0) out[k] = d
  }
  return out
}

const ingest = (run: DemoRun, events: ReadonlyArray<UsageEvent>) =>
  Effect.gen(function* () {
    const chunks: Array<ReadonlyArray<UsageEvent>> = []
    for (let i = 0; i < events.length; i += INGEST_CHUNK) chunks.push(events.slice(i, i + INGEST_CHUNK))
    const results = yield* Effect.forEach(
      chunks,
      (chunk) =>
        Effect.flatMap(
          run.client.api<{ accepted: number; duplicates: number; rejected: Array<unknown> }>("POST", "/v1/events/bulk", { events: chunk }),
          (r) =>
            r.rejected.length > 0 || r.accepted !== chunk.length
              ? Effect.fail(fail(`bulk ingest: accepted ${r.accepted}/${chunk.length}, rejected ${JSON.stringify(r.rejected.slice(0, 3))}`))
              : Effect.succeed(r.accepted)
        ),
      { concurrency: INGEST_IN_FLIGHT }
    )
    return results.reduce((a, b) => a + b, 0)
  })

/** The closed hour two hours back, its usage generated from the seed and ingested. */
export const ingestHour = (
  run: DemoRun,
  input: { readonly seed: number; readonly count: number; readonly customers: ReadonlyArray<string> }
) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const hourStart = Math.floor(now / HOUR_MS) * HOUR_MS - 2 * HOUR_MS
    const windowStart = new Date(hourStart).toISOString()
    const windowEnd = new Date(hourStart + HOUR_MS).toISOString()
    const usage = generateUsage({ seed: input.seed, count: input.count, customers: input.customers, hourStart, idPrefix: "demo" })
    const ingestStart = yield* Clock.currentTimeMillis
    const accepted = yield* ingest(run, usage.events)
    const ingestMs = (yield* Clock.currentTimeMillis) - ingestStart
    const eventsPerSecond = Math.round(accepted / Math.max(0.001, ingestMs / 1000))
    yield* run.progress.phaseDone(
      "ingest",
      `${accepted} events for ${windowStart.slice(0, 16)}Z–${windowEnd.slice(11, 16)}Z via POST /v1/events/bulk (${INGEST_CHUNK}/request, ${INGEST_IN_FLIGHT} in flight): ${eventsPerSecond} events/s`
    )
    return { hourStart, windowStart, windowEnd, usage, ingestMs, accepted, eventsPerSecond }
  })

/** The manual sync, under faults when asked; runs again while a run ends partial. */
export const manualSync = (run: DemoRun, window: { readonly windowStart: string; readonly windowEnd: string; readonly faults: boolean }) =>
  Effect.gen(function* () {
    const { emulator, client, progress } = run
    const { request, metricSum, listBatches } = client
    const { windowStart, windowEnd, faults } = window
    const statusBefore = { ...emulator.statusCounts() }
    const retriesBefore = yield* metricSum("flexprice_stripe_retries_total")
    if (faults)
      yield* emulator.setFaults({
        // Seeded: the k-th meter event request gets the k-th draw, so every run sees the same
        // faults (seed 12 answers the 1st request 503, the 3rd 429, the 6th 429, ...).
        rateLimitFraction: 0.2,
        serverErrorFraction: 0.2,
        serverErrorStatus: 503,
        seed: 12,
        paths: STRIPE_PATHS
      })
    const runs: Array<SyncRunSummary> = []
    const retriedBatchIds = new Set<string>()
    for (let attempt = 1; ; attempt++) {
      const res = yield* request("POST", "/v1/stripe/sync/manual", { window_start: windowStart, window_end: windowEnd })
      if (res.status === 409 && attempt < 10) {
        yield* Effect.sleep(Duration.seconds(1))
        continue
      }
      if (res.status !== 200) return yield* fail(`POST /v1/stripe/sync/manual answered ${res.status}: ${res.text.slice(0, 300)}`)
      const r = res.body as ManualSyncAnswer
      runs.push({
        trigger: "manual",
        status: r.status,
        batchesCreated: r.batches_created,
        batchesSynced: r.batches_synced,
        batchesSkipped: r.batches_skipped,
        batchesFailed: r.batches_failed,
        stripeRequests: r.stripe_requests
      })
      if (r.status === "completed") break
      // A run stops pushing on a transient failure that outlived the client's retries; the
      // batches stay pending and the next run sends them with the same identifiers.
      for (const b of yield* listBatches) if (b.sync_status === "pending" && b.error_code !== null) retriedBatchIds.add(b.id)
      if (attempt >= 10) return yield* fail(`manual sync still ${r.status} after ${attempt} runs: ${r.error}`)
      yield* progress.say(`           run ${attempt}: ${r.status} (${r.error}); ${r.batches_synced} synced — running again`)
    }
    if (faults) emulator.resetFaults()
    const statusAfter = { ...emulator.statusCounts() }
    const faultDiff = diffCounts(statusAfter, statusBefore)
    const retriesAfter = yield* metricSum("flexprice_stripe_retries_total")
    const clientRetries = retriesAfter === null || retriesBefore === null ? null : retriesAfter - retriesBefore
    const rateLimited = faultDiff["429"] ?? 0
    const serverErrors = Object.entries(faultDiff)
      .filter(([s]) => Number(s) >= 500)
      .reduce((a, [, n]) => a + n, 0)
    const dropped = faultDiff["0"] ?? 0
    progress.markCalls("sync (manual)")
    const first = runs[0]!
    yield* progress.phaseDone(
      "sync",
      `POST /v1/stripe/sync/manual ${windowStart.slice(11, 16)}–${windowEnd.slice(11, 16)}Z: ${runs
        .map((r) => r.status)
        .join(" → ")}; ${first.batchesCreated} batches created, ${runs.reduce((a, r) => a + r.batchesSynced, 0)} synced, ${first.batchesSkipped} skipped; Stripe answered ${rateLimited}×429, ${serverErrors}×5xx${dropped ? `, ${dropped} dropped` : ""}${clientRetries === null ? ", retried by the client" : ` → ${clientRetries} client retries`}`
    )
    return { runs, retriedBatchIds, faultResponses: { rateLimited, serverErrors, dropped }, clientRetries }
  })

/** Late events for the same hour, then the schedule on: waits until its run completes the ledger. */
export const lateEventsBySchedule = (
  run: DemoRun,
  input: {
    readonly seed: number
    readonly count: number
    readonly customers: ReadonlyArray<string>
    readonly hourStart: number
    readonly onTime: Totals
    readonly meters: ReadonlyArray<DemoMeter>
    readonly runs: Array<SyncRunSummary>
  }
) =>
  Effect.gen(function* () {
    const { client, progress } = run
    const { api, listBatches } = client
    const { seed, hourStart, meters, runs } = input
    const nLate = input.count
    const usageCustomers = input.customers
    const late = generateUsage({ seed: seed + 1, count: nLate, customers: usageCustomers, hourStart, idPrefix: "late" })
    const lateAccepted = nLate > 0 ? yield* ingest(run, late.events) : 0
    const expected: Totals = input.onTime.merge(late.totals)
    const scheduleFrom = new Date(yield* Clock.currentTimeMillis).toISOString()
    yield* api("PUT", "/v1/stripe/config", { sync_enabled: true })
    const ledgerComplete = (batches: ReadonlyArray<BatchView>) =>
      meters.every((m) =>
        Decimal.equals(
          Decimal.sum(batches.filter((b) => b.meter_id === m.meterId).map((b) => b.aggregated_quantity)),
          expected.meterTotal(m.name)
        )
      ) && batches.every((b) => b.sync_status !== "pending" && b.sync_status !== "sending")
    let scheduleRuns: ReadonlyArray<SyncRunView> = []
    for (let i = 0; ; i++) {
      const status = yield* api<{ last_run: SyncRunView | null; counts: Record<string, number> }>("GET", "/v1/stripe/sync/status")
      const last = status.last_run
      if (last && last.trigger === "schedule" && last.finished_at !== null && last.started_at >= scheduleFrom) {
        if (ledgerComplete(yield* listBatches)) {
          scheduleRuns = [last]
          break
        }
      }
      if (i >= 120) return yield* fail(`the schedule did not sync the ${lateAccepted} late events within 60 s (last run: ${JSON.stringify(last)})`)
      yield* Effect.sleep(Duration.millis(500))
    }
    for (const r of scheduleRuns)
      runs.push({
        trigger: "schedule",
        status: r.status,
        batchesCreated: r.batches_created,
        batchesSynced: r.batches_synced,
        batchesSkipped: r.batches_skipped,
        batchesFailed: r.batches_failed,
        stripeRequests: null
      })
    progress.markCalls("sync (schedule)")
    const lastRun = scheduleRuns[0]!
    yield* progress.phaseDone(
      "late",
      `${lateAccepted} late events for the same hour, then sync_enabled=true: the schedule's run ${lastRun.status}, ${lastRun.batches_created} delta batches created, ${lastRun.batches_synced} synced`
    )
    return { lateAccepted, expected }
  })

/**
 * Stripe's summaries lag accepted events (meter events are processed asynchronously,
 * https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api; the emulator
 * models the delay): asks again until every row matches or 30 s have passed.
 */
export const reconcile = (run: DemoRun, window: { readonly windowStart: string; readonly windowEnd: string }) =>
  Effect.gen(function* () {
    const { client, progress } = run
    const { windowStart, windowEnd } = window
    const reconcileOnce = client.api<{ summary: ReconciliationSummary }>(
      "GET",
      `/v1/stripe/sync/reconciliation?from=${encodeURIComponent(windowStart)}&to=${encodeURIComponent(windowEnd)}`
    )
    let reconciliation = yield* reconcileOnce
    for (let i = 0; i < 60 && (reconciliation.summary.rows_with_drift > 0 || reconciliation.summary.unavailable_pairs > 0); i++) {
      yield* Effect.sleep(Duration.millis(500))
      reconciliation = yield* reconcileOnce
    }
    progress.markCalls("reconciliation")
    const rs = reconciliation.summary
    yield* progress.phaseDone(
      "reconcile",
      `GET /v1/stripe/sync/reconciliation: ${rs.pairs} (customer, meter) pairs vs Stripe's meter event summaries, drift ${rs.drift_total}`
    )
    return rs
  })

/**
 * The sync pipeline of one tenant environment (SPEC §6):
 *
 *   plan due windows → aggregate each (EventStore stream, pages ≤ STRIPE_BATCH_SIZE_LIMIT)
 *   → ledger (batches + window progress in ONE transaction) → re-evaluate skipped batches
 *   → push pending batches in chunks (100 per stream request, one per v1 call) → record.
 *
 * Exactly once rests on three rules:
 * 1. A batch row and the watermark it was aggregated up to commit together, so a crash before
 *    the commit re-aggregates the same rows and a crash after it finds the batch in the ledger.
 * 2. Nothing is sent before its batch is committed, and every resend uses the batch's
 *    deterministic identifier (meter event identifier and Idempotency-Key), which Stripe dedups
 *    for 24 hours.
 * 3. A batch first sent more than FLEXPRICE_SYNC_RESEND_HORIZON_HOURS (23) ago is never resent
 *    blindly: Stripe's meter event summaries for its hour are compared with the ledger. If Stripe
 *    holds exactly the synced total plus the unconfirmed batches, they are marked synced; if it
 *    holds exactly the synced total, they are sent again; anything else is left `failed` with
 *    error_code `needs_review` for an operator (never retried automatically).
 *
 * Progress is kept per (window, meter) plus a per-meter mark (see migrations/0004): late rows
 * of an already synced window become a delta batch with the next sequence; a meter whose mapping
 * appears or comes back later catches up without touching the other meters' progress.
 */
import { PgClient } from "@effect/sql-pg"
import type { SqlError } from "@effect/sql"
import { Array as Arr, Chunk, Clock, Data, Effect, Fiber, Metric, MetricLabel, Option, Ref, Stream } from "effect"
import * as Decimal from "../domain/Decimal.js"
import type { TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { type AggregateGroup, EventStore, type EventStoreError } from "../events/EventStore.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import * as Metrics from "../observability/Metrics.js"
import { CustomerMappingRepo } from "../repositories/CustomerMappingRepo.js"
import { type MeterMapping, MeterMappingRepo } from "../repositories/MeterMappingRepo.js"
import type { TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import {
  type BatchRow,
  NEEDS_REVIEW,
  type NewBatch,
  pairKey,
  progressKey,
  type SkipReason,
  SyncBatchRepo
} from "../repositories/SyncBatchRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { type MeterEvent, type StripeAccountRef, StripeClient } from "../stripe/StripeClient.js"
import { isStripeError, type StripeError } from "../stripe/StripeErrors.js"
import { amountToSend } from "./Carry.js"
import { batchIdentifier } from "./Identifier.js"
import { SyncSettings } from "./SyncSettings.js"
import * as W from "./Windows.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"

export type Trigger = "schedule" | "manual"

export interface RunOptions {
  readonly trigger: Trigger
  /** Manual sync: only windows starting in [from, to), all of which must be due. */
  readonly windows?: { readonly from: Date; readonly to: Date } | undefined
  /** Aggregate and report what would be sent; write and send nothing. */
  readonly dryRun?: boolean | undefined
}

export interface WindowReport {
  readonly windowStart: Date
  readonly windowEnd: Date
  /** aggregate groups found in this pass (new rows since the window's previous watermark) */
  readonly groups: number
  /** Σ aggregated quantity of those groups */
  readonly quantity: string
  /** Σ of what this pass sends (or would send) to Stripe */
  readonly sendQuantity: string
  readonly batchesCreated: number
  readonly pending: number
  readonly skipped: number
}

export interface RunReport {
  readonly runId: string | null
  readonly status: "completed" | "partial" | "failed" | "dry_run"
  readonly watermark: Date
  readonly windows: ReadonlyArray<WindowReport>
  readonly batchesCreated: number
  readonly batchesSynced: number
  readonly batchesFailed: number
  readonly batchesSkipped: number
  /** Stripe requests made for meter events in this run */
  readonly stripeRequests: number
  readonly error: string | null
}

/** The manual range holds a window that is not due yet. */
export class WindowNotClosed extends Data.TaggedError("WindowNotClosed")<{
  readonly windowStart: Date
  readonly windowEnd: Date
  readonly dueAt: Date
}> {}

interface WindowWork {
  readonly start: Date
  /** meter id → exclusive lower bound on ingested_at (None: from the beginning) */
  readonly meters: Map<string, Option.Option<Date>>
}

interface PushCounters {
  synced: number
  failed: number
  skipped: number
  requests: number
  stop: string | null
}

const label = (k: string, v: string) => MetricLabel.make(k, v)
const countBatches = (status: string, n: number) =>
  n === 0 ? Effect.void : Metric.incrementBy(Metric.taggedWithLabels(Metrics.syncBatchesTotal, [label("status", status)]), n)

const errorInfo = (e: StripeError): { code: string; message: string } => {
  switch (e._tag) {
    case "StripeInvalidRequest":
      return { code: e.stripeCode ?? e.code, message: e.message }
    default:
      return { code: e.code, message: e.message }
  }
}

const isTransient = (e: StripeError) =>
  e._tag === "StripeRateLimited" || e._tag === "StripeUnavailable" || e._tag === "StripeCircuitOpen"

const isTooLateError = (e: StripeError) => e._tag === "StripeInvalidRequest" && e.stripeCode === "timestamp_too_far_in_past"

const HOUR_MS = 3_600_000
/** Push queue page: rows read, marked `sending` and sent per step of the push pipeline. */
const PUSH_PAGE = 2000
/** A run that ledgers this many batches refreshes the ledger's planner statistics before pushing. */
const STATISTICS_AFTER_BATCHES = 10_000

export class SyncPipeline extends Effect.Service<SyncPipeline>()("flexprice/SyncPipeline", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const store = yield* EventStore
    const watermarks = yield* IngestWatermark
    const repo = yield* SyncBatchRepo
    const meterMappings = yield* MeterMappingRepo
    const customerMappings = yield* CustomerMappingRepo
    const accounts = yield* StripeAccounts
    const stripe = yield* StripeClient
    const settings = yield* SyncSettings
    const reporter = yield* ErrorReporter
    const pageSize = settings.shared.batchSizeLimit
    const backendLabel = store.backend

    const supportedMeters = (mappings: ReadonlyArray<MeterMapping>) =>
      Effect.map(repo.meterAggregations(mappings.map((m) => m.meterId)), (types) => {
        const ok = new Set<string>()
        for (const m of mappings) {
          const t = types.get(m.meterId)
          // Stripe `sum` meters receive our window sums; `count` would count one event per
          // window and `last` needs MAX/LATEST values the event store does not aggregate.
          if (m.formula === "sum" && (t === "SUM" || t === "COUNT")) ok.add(m.meterId)
        }
        return ok
      })

    // ------------------------------------------------------------------ planning

    /** Scheduled runs: every due window with rows not yet in the ledger, per meter. */
    const planScheduled = (scope: TenantScope, config: TenantStripeConfig, meterIds: ReadonlyArray<string>, wm: Date, now: number) =>
      Effect.gen(function* () {
        const minutes = config.aggregationWindowMinutes
        const newDueThrough = W.dueThrough(now, minutes, config.gracePeriodMinutes)
        const marks = yield* repo.meterMarks(meterIds)
        const byWindow = new Map<number, Set<string>>()
        const add = (start: Date, meterId: string) => {
          if (start.getTime() >= newDueThrough.getTime()) return
          const set = byWindow.get(start.getTime()) ?? new Set<string>()
          set.add(meterId)
          byWindow.set(start.getTime(), set)
        }
        const allWindowsWithRows = (meterId: string) =>
          store.windowsWithLateRows({ scope, ingestedAfter: new Date(0), ingestedBefore: wm, windowMinutes: minutes, meterIds: [meterId] })
        for (const meterId of meterIds) {
          const mark = marks.get(meterId)
          if (mark === undefined) {
            // First run for this meter: every window that holds rows (older ones become too_late).
            for (const s of yield* allWindowsWithRows(meterId)) add(s, meterId)
            continue
          }
          const markDue = new Date(mark.dueThrough)
          if (wm.getTime() > new Date(mark.watermark).getTime()) {
            const late = yield* store.windowsWithLateRows({
              scope,
              ingestedAfter: new Date(mark.watermark),
              ingestedBefore: wm,
              windowMinutes: minutes,
              meterIds: [meterId]
            })
            for (const s of late) if (s.getTime() < markDue.getTime()) add(s, meterId)
          }
          const fresh = W.windowStarts(markDue, newDueThrough, minutes)
          if (fresh.length > 8) {
            // After a long pause: only the newly due windows that hold rows at all.
            const freshSet = new Set(fresh.map((d) => d.getTime()))
            for (const s of yield* allWindowsWithRows(meterId)) if (freshSet.has(s.getTime())) add(s, meterId)
          } else {
            for (const s of fresh) add(s, meterId)
          }
        }
        return { byWindow, newDueThrough }
      })

    const withBounds = (byWindow: Map<number, Set<string>>) =>
      Effect.gen(function* () {
        const starts = [...byWindow.keys()].sort((a, b) => a - b).map((t) => new Date(t))
        const meterIds = [...new Set([...byWindow.values()].flatMap((s) => [...s]))]
        const progress = yield* repo.windowProgress(starts, meterIds)
        return starts.map((start): WindowWork => {
          const meters = new Map<string, Option.Option<Date>>()
          for (const m of byWindow.get(start.getTime())!) meters.set(m, Option.fromNullable(progress.get(progressKey(start, m))))
          return { start, meters }
        })
      })

    // ------------------------------------------------------------------ ledger

    /** Builds the batches of one page of groups (mapping lookups, carry, identifiers). */
    const batchesOfPage = (
      scope: TenantScope,
      window: W.Window,
      sequence: number,
      tooLate: boolean,
      groups: ReadonlyArray<AggregateGroup>,
      after: Option.Option<Date>,
      mappingByMeter: ReadonlyMap<string, MeterMapping>,
      supported: ReadonlySet<string>
    ) =>
      Effect.gen(function* () {
        const customerIds = [...new Set(groups.map((g) => g.customerId))]
        const stripeCustomers = tooLate ? new Map<string, string>() : yield* customerMappings.activeByCustomerIds(customerIds)
        const carryMeters = [...new Set(groups.map((g) => g.meterId))].filter((m) => supported.has(m))
        const owed = tooLate ? new Map<string, string>() : yield* repo.outstanding(customerIds.filter((c) => stripeCustomers.has(c)), carryMeters)
        return groups.map((g): NewBatch => {
          const mapping = mappingByMeter.get(g.meterId)
          const base = {
            customerId: g.customerId,
            meterId: g.meterId,
            eventType: g.eventName,
            aggregatedQuantity: g.quantity,
            eventCount: g.eventCount,
            identifier: batchIdentifier({
              tenantId: scope.tenantId,
              environmentId: scope.environmentId,
              customerId: g.customerId,
              meterId: g.meterId,
              eventType: g.eventName,
              windowStart: window.start,
              sequence
            }),
            providerMeterId: mapping?.providerMeterId ?? null,
            ingestedAfter: Option.getOrNull(after)
          }
          const skip = (reason: SkipReason, sent: string | null = null): NewBatch => ({
            ...base,
            sentQuantity: sent,
            status: "skipped",
            skipReason: reason
          })
          if (tooLate) return skip("too_late")
          if (mapping === undefined || !supported.has(g.meterId)) return skip("unsupported_formula")
          if (!stripeCustomers.has(g.customerId)) return skip("no_mapping")
          const { sent } = amountToSend(owed.get(pairKey(g.customerId, g.meterId)) ?? "0", g.quantity, mapping.wholeUnits)
          if (Decimal.isZero(sent)) return skip("zero_quantity", "0")
          return { ...base, sentQuantity: sent, status: "pending", skipReason: null }
        })
      })

    /** One window pass: aggregate (new rows only) and, unless dry, ledger it in one transaction. */
    const processWindow = (
      scope: TenantScope,
      config: TenantStripeConfig,
      work: WindowWork,
      wm: Date,
      now: number,
      mappingByMeter: ReadonlyMap<string, MeterMapping>,
      supported: ReadonlySet<string>,
      dryRun: boolean
    ) => {
      const window = W.windowAt(work.start, config.aggregationWindowMinutes)
      const tooLate = !W.withinCreateHorizon(window.start, now)
      // Meters grouped by their lower bound: usually one aggregate query per window.
      const groupsByAfter = new Map<number, { after: Option.Option<Date>; meters: Array<string> }>()
      for (const [meterId, after] of work.meters) {
        if (Option.isSome(after) && after.value.getTime() >= wm.getTime()) continue
        const k = Option.match(after, { onNone: () => -1, onSome: (d) => d.getTime() })
        const entry = groupsByAfter.get(k) ?? { after, meters: [] }
        entry.meters.push(meterId)
        groupsByAfter.set(k, entry)
      }
      const meterIds = [...groupsByAfter.values()].flatMap((g) => g.meters)

      const body = Effect.gen(function* () {
        const sequence = yield* repo.nextSequence(window.start)
        let groups = 0
        let quantity = "0"
        let sendQuantity = "0"
        let created = 0
        let pending = 0
        let skipped = 0
        for (const { after, meters } of groupsByAfter.values()) {
          const started = yield* Clock.currentTimeMillis
          let rows = 0
          yield* store
            .aggregateBillable({
              scope,
              windowStart: window.start,
              windowEnd: window.end,
              ingestedAfter: Option.getOrUndefined(after),
              ingestedBefore: wm,
              meterIds: meters,
              pageSize
            })
            .pipe(
              Stream.chunks,
              Stream.runForEach((chunk) =>
                Effect.gen(function* () {
                  const page = Chunk.toReadonlyArray(chunk)
                  rows += page.length
                  const batches = yield* batchesOfPage(scope, window, sequence, tooLate, page, after, mappingByMeter, supported)
                  groups += page.length
                  quantity = Decimal.add(quantity, Decimal.sum(page.map((g) => g.quantity)))
                  for (const b of batches) {
                    if (b.status === "pending") {
                      pending++
                      sendQuantity = Decimal.add(sendQuantity, b.sentQuantity!)
                    } else skipped++
                  }
                  created += batches.length
                  if (!dryRun) yield* repo.insertBatches(window, sequence, wm, batches)
                })
              ),
              Effect.withSpan("sync.aggregate", {
                attributes: { "sync.meters": meters.length, "sync.delta": Option.isSome(after), backend: backendLabel }
              })
            )
          const elapsed = (yield* Clock.currentTimeMillis) - started
          yield* Metric.update(
            Metric.taggedWithLabels(Metrics.aggregationQueryDurationSeconds, [label("backend", backendLabel)]),
            elapsed / 1000
          )
          yield* Effect.annotateCurrentSpan({ "sync.groups": rows, "sync.aggregate_ms": elapsed })
        }
        if (!dryRun) yield* repo.recordWindowPass({ windowStart: window.start, windowEnd: window.end, sequence, watermark: wm, meterIds })
        yield* Effect.annotateCurrentSpan({ "sync.batches_created": created, "sync.sequence": sequence })
        return {
          windowStart: window.start,
          windowEnd: window.end,
          groups,
          quantity,
          sendQuantity,
          batchesCreated: dryRun ? 0 : created,
          pending,
          skipped
        } satisfies WindowReport
      })

      return (dryRun || meterIds.length === 0 ? body : sql.withTransaction(body)).pipe(
        Effect.withSpan("sync.window", {
          attributes: {
            "sync.window_start": window.start.toISOString(),
            "sync.window_end": window.end.toISOString(),
            "sync.too_late": tooLate,
            "sync.dry_run": dryRun
          }
        })
      )
    }

    // ------------------------------------------------------------------ re-evaluation

    /** Skipped no_mapping / mapping_deleted batches whose mappings now exist become pending. */
    const reevaluate = (mappingByMeter: ReadonlyMap<string, MeterMapping>, supported: ReadonlySet<string>, now: number) =>
      Effect.gen(function* () {
        const since = new Date(now - W.STRIPE_MAX_AGE_MS + W.CREATE_MARGIN_MS)
        let afterId: string | undefined
        let revived = 0
        for (;;) {
          const rows = yield* repo.skippedForReevaluation({ since, limit: 5000, afterId })
          if (rows.length === 0) break
          afterId = rows[rows.length - 1]!.id
          const stripeCustomers = yield* customerMappings.activeByCustomerIds([...new Set(rows.map((r) => r.customerId))])
          const ready = rows
            .filter((r) => stripeCustomers.has(r.customerId) && supported.has(r.meterId))
            .sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime() || a.sequence - b.sequence)
          if (ready.length === 0) continue
          const owed = yield* repo.outstanding([...new Set(ready.map((r) => r.customerId))], [...new Set(ready.map((r) => r.meterId))])
          const updates = ready.map((r) => {
            const key = pairKey(r.customerId, r.meterId)
            const mapping = mappingByMeter.get(r.meterId)!
            const { sent, outstanding } = amountToSend(owed.get(key) ?? "0", r.aggregatedQuantity, mapping.wholeUnits)
            owed.set(key, outstanding)
            const zero = Decimal.isZero(sent)
            return {
              id: r.id,
              sentQuantity: sent,
              providerMeterId: mapping.providerMeterId,
              status: zero ? ("skipped" as const) : ("pending" as const),
              skipReason: zero ? ("zero_quantity" as const) : null
            }
          })
          yield* repo.makeSendable(updates, new Date(now))
          revived += updates.length
        }
        yield* Effect.annotateCurrentSpan({ "sync.revived": revived })
        return revived
      }).pipe(Effect.withSpan("sync.reevaluate"))

    // ------------------------------------------------------------------ push

    const eventOf = (b: BatchRow, mapping: MeterMapping, stripeCustomer: string): MeterEvent => ({
      eventName: mapping.stripeEventName,
      identifier: b.identifier,
      timestamp: b.windowStart,
      payload: { [mapping.customerPayloadKey]: stripeCustomer, [mapping.valuePayloadKey]: b.sentQuantity ?? "0" }
    })

    const recordSynced = (batches: ReadonlyArray<BatchRow>, now: number) =>
      Effect.gen(function* () {
        yield* repo.markSynced(
          batches.map((b) => b.id),
          new Date(now)
        )
        yield* countBatches("synced", batches.length)
        for (const b of batches)
          yield* Metric.update(Metrics.syncLagSeconds, Math.max(0, (now - b.windowEnd.getTime()) / 1000))
      })

    const onFailure = (batches: ReadonlyArray<BatchRow>, e: StripeError, counters: Ref.Ref<PushCounters>) =>
      Effect.gen(function* () {
        const now = new Date(yield* Clock.currentTimeMillis)
        const ids = batches.map((b) => b.id)
        const info = errorInfo(e)
        yield* Metric.increment(Metric.taggedWithLabels(Metrics.errorsTotal, [label("code", info.code), label("area", "sync")]))
        if (isTransient(e)) {
          // An outage, a rate-limit storm or an open breaker never fails a batch: it stays
          // pending (the identifier makes the resend safe) and this run stops pushing.
          yield* repo.markPending(ids, now, info)
          yield* countBatches("retrying", ids.length)
          yield* Ref.update(counters, (c) => ({ ...c, stop: c.stop ?? info.code }))
        } else if (isTooLateError(e)) {
          yield* repo.markSkipped(ids, now, "too_late")
          yield* countBatches("skipped", ids.length)
          yield* Ref.update(counters, (c) => ({ ...c, skipped: c.skipped + ids.length }))
        } else {
          yield* repo.markFailed(ids, now, info)
          yield* countBatches("failed", ids.length)
          const first = batches[0]
          const scope = Option.getOrUndefined(yield* Effect.serviceOption(CurrentTenant))
          yield* reporter.report(e, {
            area: "sync",
            code: info.code,
            tenantId: scope?.tenantId,
            environmentId: scope?.environmentId,
            window: first ? `${first.windowStart.toISOString()}/${first.windowEnd.toISOString()}` : undefined,
            batchId: first?.id,
            stripeRequestId: "requestId" in e ? e.requestId : undefined,
            extra: { batches: ids.length }
          })
          yield* Ref.update(counters, (c) => ({
            ...c,
            failed: c.failed + ids.length,
            stop: e._tag === "StripeAuthenticationFailed" ? (c.stop ?? info.code) : c.stop
          }))
        }
      })

    /**
     * Batches Stripe accepted, written `synced` in groups (one UPDATE per ~1,000 rather than per
     * chunk). A crash before a flush leaves them `sending`: the next run resends them with the
     * same identifiers and Stripe deduplicates.
     */
    interface SyncedBuffer {
      readonly items: Array<BatchRow>
    }
    const flushSynced = (buffer: SyncedBuffer, counters: Ref.Ref<PushCounters>) =>
      Effect.suspend(() => {
        const items = buffer.items.splice(0, buffer.items.length)
        if (items.length === 0) return Effect.void
        return Effect.gen(function* () {
          yield* recordSynced(items, yield* Clock.currentTimeMillis)
          yield* Ref.update(counters, (c) => ({ ...c, synced: c.synced + items.length }))
        })
      })

    /** One chunk to Stripe (the page is already `sending`); failures are recorded at once. */
    const pushChunk = (
      ref: StripeAccountRef,
      config: TenantStripeConfig,
      chunk: ReadonlyArray<{ readonly batch: BatchRow; readonly event: MeterEvent; readonly customerKey: string }>,
      counters: Ref.Ref<PushCounters>,
      attempted: Set<string>,
      buffer: SyncedBuffer
    ) =>
      Effect.gen(function* () {
        if ((yield* Ref.get(counters)).stop !== null) return
        const started = yield* Clock.currentTimeMillis
        if (config.transport === "stream") {
          for (const c of chunk) attempted.add(c.batch.id)
          const result = yield* Effect.either(
            stripe.sendMeterEventsStream(
              ref,
              chunk.map((c) => c.event)
            )
          )
          yield* Ref.update(counters, (c) => ({ ...c, requests: c.requests + 1 }))
          if (result._tag === "Right") buffer.items.push(...chunk.map((c) => c.batch))
          else
            yield* onFailure(
              chunk.map((c) => c.batch),
              result.left,
              counters
            )
        } else {
          yield* Effect.forEach(
            chunk,
            (c) =>
              Effect.flatMap(Ref.get(counters), (state) =>
                state.stop !== null
                  ? Effect.void
                  : Effect.suspend(() => {
                      attempted.add(c.batch.id)
                      return stripe.sendMeterEventV1(ref, c.event, { customerPayloadKey: c.customerKey }).pipe(
                        Effect.either,
                        Effect.tap(() => Ref.update(counters, (s) => ({ ...s, requests: s.requests + 1 }))),
                        Effect.flatMap((r) =>
                          r._tag === "Right" ? Effect.sync(() => void buffer.items.push(c.batch)) : onFailure([c.batch], r.left, counters)
                        )
                      )
                    })
              ),
            { concurrency: settings.pushConcurrency, discard: true }
          )
        }
        if (buffer.items.length >= 1000) yield* flushSynced(buffer, counters)
        const elapsed = (yield* Clock.currentTimeMillis) - started
        yield* Metric.update(Metrics.syncBatchDurationSeconds, elapsed / 1000)
      }).pipe(
        Effect.withSpan("sync.chunk", {
          attributes: { "sync.batches": chunk.length, "sync.transport": config.transport }
        })
      )

    /**
     * Past Stripe's dedup horizon: compare Stripe's hourly summary with the ledger before any
     * resend. Returns the batches that are safe to send again (not delivered).
     */
    const verifyOld = (
      ref: StripeAccountRef,
      batch: BatchRow,
      mapping: MeterMapping,
      stripeCustomer: string,
      counters: Ref.Ref<PushCounters>
    ) =>
      Effect.gen(function* () {
        const hourStart = new Date(Math.floor(batch.windowStart.getTime() / HOUR_MS) * HOUR_MS)
        const hourEnd = new Date(hourStart.getTime() + HOUR_MS)
        const summaries = yield* stripe.listMeterEventSummaries(ref, {
          meterId: mapping.providerMeterId,
          customer: stripeCustomer,
          startTime: hourStart,
          endTime: hourEnd
        })
        const stripeTotal = Decimal.sum(summaries.map((s) => s.aggregatedValue))
        const ours = yield* repo.syncedTotalsFor(batch.customerId, batch.meterId, hourStart, hourEnd)
        const synced = Decimal.sum(ours.filter((b) => b.syncStatus === "synced").map((b) => b.sentQuantity ?? "0"))
        const uncertain = ours.filter(
          (b) => b.syncStatus !== "synced" && b.syncStatus !== "skipped" && b.firstSentAt !== null
        )
        const uncertainSum = Decimal.sum(uncertain.map((b) => b.sentQuantity ?? "0"))
        const now = yield* Clock.currentTimeMillis
        const ids = uncertain.map((b) => b.id)
        if (Decimal.equals(stripeTotal, Decimal.add(synced, uncertainSum))) {
          yield* repo.markSynced(ids, new Date(now), {
            code: "verified_delivered",
            message: "confirmed against Stripe meter event summaries after the 24 h dedup horizon"
          })
          yield* countBatches("synced", ids.length)
          yield* Ref.update(counters, (c) => ({ ...c, synced: c.synced + ids.length }))
          return false
        }
        if (Decimal.equals(stripeTotal, synced)) {
          yield* repo.clearFirstSent(ids, new Date(now))
          return true
        }
        yield* repo.markFailed(ids, new Date(now), {
          code: NEEDS_REVIEW,
          message: `Stripe reports ${stripeTotal} for ${hourStart.toISOString()}, the ledger has ${synced} synced and ${uncertainSum} unconfirmed; not resent automatically`
        })
        yield* countBatches("failed", ids.length)
        yield* Ref.update(counters, (c) => ({ ...c, failed: c.failed + ids.length }))
        return false
      }).pipe(
        Effect.catchIf(isStripeError, (e) =>
          // Stripe could not answer: leave the batch as it is; the next run checks again.
          Effect.as(Effect.logWarning("could not verify an old batch against Stripe").pipe(Effect.annotateLogs({ error: e._tag })), false)
        ),
        Effect.withSpan("sync.verify_old_batch", { attributes: { "sync.batch": batch.id } })
      )

    interface PreparedPage {
      /** keyset position after this page */
      readonly cursor: { readonly windowStart: Date; readonly id: string }
      /** already `sending` in the ledger */
      readonly sendable: ReadonlyArray<{ readonly batch: BatchRow; readonly event: MeterEvent; readonly customerKey: string }>
    }

    /**
     * Reads the next page of the queue, skips what cannot be sent and marks the rest `sending`
     * (first_sent_at starts the 24 h clock) — all before any of it goes to Stripe. None: the
     * queue is exhausted.
     */
    const preparePage = (
      ref: StripeAccountRef,
      mappingByMeter: ReadonlyMap<string, MeterMapping>,
      range: RunOptions["windows"],
      after: Option.Option<{ readonly windowStart: Date; readonly id: string }>,
      counters: Ref.Ref<PushCounters>
    ) =>
      Effect.gen(function* () {
        const page = yield* repo.pushQueue({
          after,
          limit: PUSH_PAGE,
          retryCap: settings.maxRetries,
          windowFrom: range?.from,
          windowTo: range?.to
        })
        if (page.length === 0) return Option.none<PreparedPage>()
        const last = page[page.length - 1]!
        const now = yield* Clock.currentTimeMillis
        const stripeCustomers = yield* customerMappings.activeByCustomerIds([...new Set(page.map((b) => b.customerId))])
        const noMeter: Array<string> = []
        const noCustomer: Array<string> = []
        const tooLate: Array<string> = []
        const sendable: Array<{ batch: BatchRow; event: MeterEvent; customerKey: string }> = []
        const resendHorizon = now - settings.resendHorizonHours * HOUR_MS
        for (const b of page) {
          const mapping = mappingByMeter.get(b.meterId)
          const customer = stripeCustomers.get(b.customerId)
          if (mapping === undefined) {
            noMeter.push(b.id)
            continue
          }
          if (customer === undefined) {
            noCustomer.push(b.id)
            continue
          }
          if (b.firstSentAt !== null && b.firstSentAt.getTime() < resendHorizon) {
            const resend = yield* verifyOld(ref, b, mapping, customer, counters)
            if (!resend) continue
          } else if (!W.withinSendHorizon(b.windowStart, now)) {
            tooLate.push(b.id)
            continue
          }
          sendable.push({ batch: b, event: eventOf(b, mapping, customer), customerKey: mapping.customerPayloadKey })
        }
        const at = new Date(now)
        yield* repo.markSkipped(noMeter, at, "mapping_deleted")
        yield* repo.markSkipped(noCustomer, at, "no_mapping")
        yield* repo.markSkipped(tooLate, at, "too_late")
        const skippedNow = noMeter.length + noCustomer.length + tooLate.length
        yield* countBatches("skipped", skippedNow)
        yield* Ref.update(counters, (c) => ({ ...c, skipped: c.skipped + skippedNow }))
        yield* repo.markSending(
          sendable.map((x) => x.batch.id),
          at
        )
        return Option.some<PreparedPage>({ cursor: { windowStart: last.windowStart, id: last.id }, sendable })
      })

    /** Batches marked `sending` but never attempted (a stop) go back to `pending`. */
    const restoreUnattempted = (sendable: PreparedPage["sendable"], attempted: ReadonlySet<string>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        repo.restorePending(
          sendable.filter((x) => !attempted.has(x.batch.id)).map((x) => x.batch),
          new Date(now),
          { code: "sync_stopped", message: "not attempted in this run after a transient Stripe failure" }
        )
      )

    const push = (
      config: TenantStripeConfig,
      mappingByMeter: ReadonlyMap<string, MeterMapping>,
      range: RunOptions["windows"],
      counters: Ref.Ref<PushCounters>
    ) =>
      Effect.gen(function* () {
        const ref = yield* accounts.refFor
        const prepare = (after: Option.Option<{ readonly windowStart: Date; readonly id: string }>) =>
          Effect.forkScoped(preparePage(ref, mappingByMeter, range, after, counters))
        // Pipelined: while one page is on the wire, the next one is read and marked `sending`
        // (its own keyset range, so no row is in two pages). If the run stops, the prepared
        // page goes back to `pending` unattempted; if the run fails or is interrupted, the
        // prepared page is left `sending`, like after a crash (resent with the same identifiers).
        let next = yield* prepare(Option.none())
        for (;;) {
          const prepared = yield* Fiber.join(next)
          if (Option.isNone(prepared)) break
          const { cursor, sendable } = prepared.value
          if ((yield* Ref.get(counters)).stop !== null) {
            yield* restoreUnattempted(sendable, new Set())
            break
          }
          next = yield* prepare(Option.some(cursor))
          const attempted = new Set<string>()
          const buffer: SyncedBuffer = { items: [] }
          yield* Effect.forEach(
            Arr.chunksOf(sendable, 100),
            (chunk) => pushChunk(ref, config, chunk, counters, attempted, buffer),
            { concurrency: config.transport === "stream" ? settings.pushConcurrency : 1, discard: true }
          ).pipe(Effect.ensuring(Effect.ignore(flushSynced(buffer, counters))))
          yield* restoreUnattempted(sendable, attempted)
        }
      }).pipe(Effect.scoped, Effect.withSpan("sync.push", { attributes: { "sync.transport": config.transport } }))

    // ------------------------------------------------------------------ run

    /**
     * One run for the CurrentTenant. The caller holds the tenant's lease (SyncService does).
     * Fails with WindowNotClosed for a manual range holding an open window.
     */
    const run = (
      config: TenantStripeConfig,
      options: RunOptions
    ): Effect.Effect<RunReport, WindowNotClosed | SqlError.SqlError | EventStoreError, CurrentTenant> =>
      Effect.gen(function* () {
        const scope = yield* CurrentTenant
        const now = yield* Clock.currentTimeMillis
        const wm = yield* watermarks.current
        yield* Effect.annotateCurrentSpan({
          tenant_id: scope.tenantId,
          environment_id: scope.environmentId,
          "sync.watermark": wm.toISOString()
        })
        const dryRun = options.dryRun === true
        const minutes = config.aggregationWindowMinutes

        if (options.windows) {
          for (const w of W.windowsOverlapping(options.windows.from, options.windows.to, minutes)) {
            if (!W.isDue(w, config.gracePeriodMinutes, now))
              return yield* new WindowNotClosed({
                windowStart: w.start,
                windowEnd: w.end,
                dueAt: new Date(w.end.getTime() + config.gracePeriodMinutes * W.MINUTE_MS)
              })
          }
        }
        const range = options.windows
          ? {
              from: W.alignDown(options.windows.from, minutes),
              to: new Date(W.alignDown(new Date(options.windows.to.getTime() - 1), minutes).getTime() + minutes * W.MINUTE_MS)
            }
          : undefined

        const mappings = yield* meterMappings.listEnabled
        const mappingByMeter = new Map(mappings.map((m) => [m.meterId, m]))
        const supported = yield* supportedMeters(mappings)
        const meterIds = mappings.map((m) => m.meterId)
        const runId = dryRun ? null : yield* repo.startRun(options.trigger, new Date(now))

        const body = Effect.gen(function* () {
          // ---- plan + ledger
          let plan: ReadonlyArray<WindowWork>
          let marks: { newDueThrough: Date } | undefined
          if (range) {
            const byWindow = new Map<number, Set<string>>()
            for (const s of W.windowStarts(range.from, range.to, minutes)) byWindow.set(s.getTime(), new Set(meterIds))
            plan = yield* withBounds(byWindow)
          } else {
            const planned = yield* planScheduled(scope, config, meterIds, wm, now)
            plan = yield* withBounds(planned.byWindow)
            marks = { newDueThrough: planned.newDueThrough }
          }
          const windows: Array<WindowReport> = []
          for (const work of plan) {
            windows.push(yield* processWindow(scope, config, work, wm, now, mappingByMeter, supported, dryRun))
          }
          if (marks && !dryRun) {
            for (const m of meterIds) yield* repo.advanceMark(m, wm, marks.newDueThrough)
          }
          const created = windows.reduce((n, w) => n + w.batchesCreated, 0)
          if (created >= STATISTICS_AFTER_BATCHES) yield* repo.refreshStatistics
          const skippedAtLedger = windows.reduce((n, w) => n + (dryRun ? 0 : w.skipped), 0)
          yield* countBatches("skipped", skippedAtLedger)
          if (dryRun) {
            return {
              runId,
              status: "dry_run" as const,
              watermark: wm,
              windows,
              batchesCreated: 0,
              batchesSynced: 0,
              batchesFailed: 0,
              batchesSkipped: 0,
              stripeRequests: 0,
              error: null
            } satisfies RunReport
          }

          // ---- re-evaluate, push
          yield* reevaluate(mappingByMeter, supported, now)
          const counters = yield* Ref.make<PushCounters>({ synced: 0, failed: 0, skipped: 0, requests: 0, stop: null })
          const pushError = yield* push(config, mappingByMeter, range, counters).pipe(
            Effect.as(null as string | null),
            Effect.catchTags({
              StripeNotConfigured: (e) => Effect.succeed(e.code as string | null),
              DecryptionFailed: (e) => Effect.succeed(e.code as string | null)
            })
          )
          const c = yield* Ref.get(counters)
          const error = pushError ?? c.stop
          const status: RunReport["status"] = error === null ? "completed" : "partial"
          const attempted = c.synced + c.failed
          if (attempted > 0) yield* Metric.set(Metrics.syncSuccessRatio, c.synced / attempted)
          return {
            runId,
            status,
            watermark: wm,
            windows,
            batchesCreated: created,
            batchesSynced: c.synced,
            batchesFailed: c.failed,
            batchesSkipped: skippedAtLedger + c.skipped,
            stripeRequests: c.requests,
            error
          } satisfies RunReport
        })

        const report = yield* body.pipe(
          Effect.tapErrorCause((cause) =>
            runId === null
              ? Effect.void
              : Clock.currentTimeMillis.pipe(
                  Effect.flatMap((t) =>
                    repo.finishRun(
                      runId,
                      "failed",
                      { windows: 0, batchesCreated: 0, batchesSynced: 0, batchesFailed: 0, batchesSkipped: 0 },
                      new Date(t),
                      String(cause).slice(0, 500)
                    )
                  ),
                  Effect.ignore
                )
          )
        )
        if (runId !== null) {
          yield* repo.finishRun(
            runId,
            report.status === "dry_run" ? "completed" : report.status,
            {
              windows: report.windows.length,
              batchesCreated: report.batchesCreated,
              batchesSynced: report.batchesSynced,
              batchesFailed: report.batchesFailed,
              batchesSkipped: report.batchesSkipped
            },
            new Date(yield* Clock.currentTimeMillis),
            report.error
          )
        }
        if (runId !== null) {
          // Gauges for the alert rules (per tenant only when FLEXPRICE_METRICS_TENANT_LABELS=true).
          const tags = Metrics.tenantTags(scope)
          const counts = yield* repo.statusCounts
          const total = (st: string) => counts.filter((c) => c.status === st).reduce((n, c) => n + c.count, 0)
          yield* Metric.set(Metric.taggedWithLabels(Metrics.syncPendingBatches, tags), total("pending") + total("sending"))
          yield* Metric.set(Metric.taggedWithLabels(Metrics.syncFailedBatches, tags), total("failed"))
          const oldest = yield* repo.oldestUnsyncedWindow
          const nowMs = yield* Clock.currentTimeMillis
          yield* Metric.set(
            Metric.taggedWithLabels(Metrics.syncOldestUnsyncedWindowAgeSeconds, tags),
            Option.match(oldest, { onNone: () => 0, onSome: (d) => Math.max(0, (nowMs - d.getTime()) / 1000) })
          )
        }
        yield* Effect.annotateCurrentSpan({
          "sync.windows": report.windows.length,
          "sync.batches_created": report.batchesCreated,
          "sync.batches_synced": report.batchesSynced,
          "sync.batches_failed": report.batchesFailed,
          "sync.status": report.status
        })
        return report
      }).pipe(
        Effect.withSpan("sync.run", {
          attributes: { "sync.trigger": options.trigger, "sync.dry_run": options.dryRun === true }
        })
      )

    return { run } as const
  })
}) {}

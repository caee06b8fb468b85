/**
 * One window's ledger pass (exactly-once rule 1 in SyncPipeline.ts): aggregate the rows
 * ingested since each meter's progress in this window, turn every group into a batch (mapping
 * lookups, carried remainders, deterministic identifier) and write the batches and the window's
 * new progress in ONE transaction. A dry run aggregates and reports the same figures and writes
 * nothing.
 */
import { Chunk, Clock, Context, Effect, Option, Stream } from "effect"
import * as Decimal from "../domain/Decimal.js"
import type { AggregateGroup } from "../events/EventStore.js"
import { type NewBatch, pairKey, type SkipReason } from "../repositories/SyncBatchRepo.js"
import { amountToSend } from "./Carry.js"
import { batchIdentifier } from "./Identifier.js"
import type { RunContext, WindowReport, WindowWork } from "./RunContext.js"
import { checkFence, LeaseLost } from "./SyncLease.js"
import { aggregationDuration } from "./SyncMetrics.js"
import * as G from "./WindowGrid.js"
import * as W from "./Windows.js"

/**
 * A point where a test or the simulator can stop a run between planning a window and its ledger
 * transaction — where a replica paused past its lease would be. Absent in production.
 */
export class WindowPassHook extends Context.Tag("flexprice/WindowPassHook")<
  WindowPassHook,
  { readonly beforePass: (window: W.Window) => Effect.Effect<void> }
>() {}

/** One aggregated page of a window pass. */
interface PageInput {
  readonly window: W.Window
  readonly sequence: number
  /** the window is past Stripe's create horizon: every batch is skipped `too_late` */
  readonly tooLate: boolean
  readonly groups: ReadonlyArray<AggregateGroup>
  /** the ingest bound these groups were aggregated from */
  readonly after: Option.Option<Date>
}

/** Builds the batches of one page of groups (mapping lookups, carry, identifiers). */
const batchesOfPage = (ctx: RunContext, input: PageInput) =>
  Effect.gen(function* () {
    const { after, groups, sequence, tooLate, window } = input
    const { mappingByMeter, scope, supported } = ctx
    const { repo } = ctx.deps
    const customerIds = [...new Set(groups.map((g) => g.customerId))]
    const stripeCustomers = tooLate ? new Map<string, string>() : yield* ctx.customers.activeByCustomerIds(customerIds)
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
      if (mapping === undefined) return skip("unsupported_formula")
      if (!supported.has(g.meterId)) return skip(supported.skipReason(g.meterId))
      if (!stripeCustomers.has(g.customerId)) return skip("no_mapping")
      const { sent } = amountToSend(owed.get(pairKey(g.customerId, g.meterId)) ?? "0", g.quantity, mapping.wholeUnits)
      if (Decimal.isZero(sent)) return skip("zero_quantity", "0")
      return { ...base, sentQuantity: sent, status: "pending", skipReason: null }
    })
  })

/** One window pass: aggregate (new rows only) and, unless dry, ledger it in one transaction. */
export const processWindow = Effect.fn("WindowPass.processWindow")(function* (ctx: RunContext, work: WindowWork) {
  const { dryRun, now, scope, watermark: wm } = ctx
  const { repo, sql, store } = ctx.deps
  const pageSize = ctx.deps.settings.shared.batchSizeLimit
  const backendLabel = store.backend
  const window = G.windowOf(ctx.grid, work.start)
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

  /**
   * Inside the pass's transaction, before anything is read for it: our lease must still be ours
   * (the lease row stays locked until commit, so no takeover can interleave), and the window's
   * progress must still be what planning read — otherwise another runner already ledgered these
   * rows, and aggregating from the old bound would bill them twice.
   */
  const fenced = Effect.gen(function* () {
    yield* checkFence
    const current = yield* repo.windowProgressForUpdate(window.start, meterIds)
    for (const [meterId, after] of work.meters) {
      if (!meterIds.includes(meterId)) continue
      const now = current.get(meterId)
      const planned = Option.getOrUndefined(after)
      if (now?.getTime() !== planned?.getTime())
        return yield* new LeaseLost({ tenantKey: `${scope.tenantId}/${scope.environmentId}` })
    }
  })

  const body = Effect.gen(function* () {
    if (!dryRun) yield* fenced
    const sequence = yield* repo.nextSequence(window.start)
    let groups = 0
    let quantity = "0"
    let sendQuantity = "0"
    let created = 0
    let pending = 0
    let skipped = 0
    /** One aggregate query (the meters sharing a lower bound), each page ledgered as it arrives; answers the groups read. */
    const aggregate = Effect.fn("WindowPass.aggregate")(function* (after: Option.Option<Date>, meters: ReadonlyArray<string>) {
      yield* Effect.annotateCurrentSpan({ "sync.meters": meters.length, "sync.delta": Option.isSome(after), backend: backendLabel })
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
          // a keyset read whose last page was exactly full ends with an empty page: nothing to ledger
          Stream.filter(Chunk.isNonEmpty),
          Stream.runForEach((chunk) =>
            Effect.gen(function* () {
              const page = Chunk.toReadonlyArray(chunk)
              rows += page.length
              const batches = yield* batchesOfPage(ctx, { window, sequence, tooLate, groups: page, after })
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
          )
        )
      return rows
    })
    for (const { after, meters } of groupsByAfter.values()) {
      const started = yield* Clock.currentTimeMillis
      const rows = yield* aggregate(after, meters)
      const elapsed = (yield* Clock.currentTimeMillis) - started
      yield* aggregationDuration(backendLabel, elapsed)
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

  const hook = Effect.flatMap(Effect.serviceOption(WindowPassHook), (h) =>
    Option.isSome(h) ? h.value.beforePass(window) : Effect.void
  )
  yield* Effect.annotateCurrentSpan({
    "sync.window_start": window.start.toISOString(),
    "sync.window_end": window.end.toISOString(),
    "sync.too_late": tooLate,
    "sync.dry_run": dryRun
  })
  return yield* Effect.zipRight(hook, dryRun || meterIds.length === 0 ? body : sql.withTransaction(body))
})

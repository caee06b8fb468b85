/**
 * Which windows a run visits, per meter, and from which ingest bound each is aggregated.
 *
 * A scheduled run follows each meter's mark (migrations/0004): windows newly due since the mark,
 * plus older windows that received late rows since the mark's watermark; a meter without a mark
 * starts from every window holding rows. A manual run visits every window of its range, each
 * from the ledger's recorded progress, after checking all of them are due.
 */
import { Data, Effect, Either, Option } from "effect"
import type { MeterMapping } from "../repositories/MeterMappingRepo.js"
import type { TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import { progressKey } from "../repositories/SyncBatchRepo.js"
import type { makeMeterSupport } from "./MeterSupport.js"
import type { RunContext, SyncDeps, WindowRange, WindowWork } from "./RunContext.js"
import * as G from "./WindowGrid.js"
import * as W from "./Windows.js"

/** The manual range holds a window that is not due yet. */
export class WindowNotClosed extends Data.TaggedError("WindowNotClosed")<{
  readonly windowStart: Date
  readonly windowEnd: Date
  readonly dueAt: Date
}> {}

/**
 * Meters Stripe can receive as window sums: formula fit and pre-aggregation (MeterSupport.ts).
 * `check` is the per-process meter check built with the pipeline.
 */
export const supportedMeters = (
  deps: SyncDeps,
  check: ReturnType<typeof makeMeterSupport>,
  mappings: ReadonlyArray<MeterMapping>,
  /** undefined: the key is not to be used this run (paused) */
  account: RunContext["account"] | undefined
) =>
  Effect.gen(function* () {
    const types = yield* deps.repo.meterAggregations(mappings.map((m) => m.meterId))
    // Not configured / undecryptable: nothing can be sent this run anyway (the push says why).
    return yield* check(account === undefined ? undefined : Either.getOrUndefined(account), mappings, types)
  })

/**
 * A manual range as aligned window bounds; fails with WindowNotClosed when any window it
 * overlaps is not due at `now`.
 */
export const manualRange = (
  config: TenantStripeConfig,
  grid: G.Grid,
  windows: { readonly from: Date; readonly to: Date },
  now: number
): Effect.Effect<WindowRange, WindowNotClosed> =>
  Effect.suspend(() => {
    for (const w of G.windowsOverlapping(grid, windows.from, windows.to)) {
      if (!W.isDue(w, config.gracePeriodMinutes, now))
        return Effect.fail(
          new WindowNotClosed({
            windowStart: w.start,
            windowEnd: w.end,
            dueAt: new Date(w.end.getTime() + config.gracePeriodMinutes * W.MINUTE_MS)
          })
        )
    }
    return Effect.succeed({
      from: G.windowOf(grid, windows.from).start,
      to: G.windowOf(grid, windows.to.getTime() - 1).end
    })
  })

/** Scheduled runs: every due window with rows not yet in the ledger, per meter. */
const planScheduled = (ctx: RunContext) =>
  Effect.gen(function* () {
    const { config, grid, meterIds, now, scope, watermark: wm } = ctx
    const { repo, store } = ctx.deps
    const newDueThrough = G.dueThrough(grid, now, config.gracePeriodMinutes)
    const marks = yield* repo.meterMarks(meterIds)
    const byWindow = new Map<number, Set<string>>()
    const add = (start: Date, meterId: string) => {
      if (start.getTime() >= newDueThrough.getTime()) return
      const set = byWindow.get(start.getTime()) ?? new Set<string>()
      set.add(meterId)
      byWindow.set(start.getTime(), set)
    }
    /** Window starts holding rows ingested in (after, wm], each cut on the grid in force at its rows. */
    const windowsWithRows = (meterId: string, after: Date) =>
      Effect.map(
        Effect.forEach(grid, (segment, i) =>
          Effect.map(
            store.windowsWithLateRows({ scope, ingestedAfter: after, ingestedBefore: wm, windowMinutes: segment.minutes, meterIds: [meterId] }),
            // a row's window starts in its segment iff the row does (segments start on boundaries)
            (starts) => starts.filter((s) => s.getTime() >= segment.from && s.getTime() < (grid[i + 1]?.from ?? Infinity))
          )
        ),
        (perSegment) => perSegment.flat()
      )
    const allWindowsWithRows = (meterId: string) => windowsWithRows(meterId, new Date(0))
    for (const meterId of meterIds) {
      const mark = marks.get(meterId)
      if (mark === undefined) {
        // First run for this meter: every window that holds rows (older ones become too_late).
        for (const s of yield* allWindowsWithRows(meterId)) add(s, meterId)
        continue
      }
      const markDue = new Date(mark.dueThrough)
      if (wm.getTime() > new Date(mark.watermark).getTime()) {
        const late = yield* windowsWithRows(meterId, new Date(mark.watermark))
        for (const s of late) if (s.getTime() < markDue.getTime()) add(s, meterId)
      }
      const fresh = G.windowStarts(grid, markDue, newDueThrough)
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

/** Each planned window with its meters' lower bounds from the ledger's progress. */
const withBounds = (deps: SyncDeps, byWindow: Map<number, Set<string>>) =>
  Effect.gen(function* () {
    const starts = [...byWindow.keys()].sort((a, b) => a - b).map((t) => new Date(t))
    const meterIds = [...new Set([...byWindow.values()].flatMap((s) => [...s]))]
    const progress = yield* deps.repo.windowProgress(starts, meterIds)
    return starts.map((start): WindowWork => {
      const meters = new Map<string, Option.Option<Date>>()
      for (const m of byWindow.get(start.getTime())!) meters.set(m, Option.fromNullable(progress.get(progressKey(start, m))))
      return { start, meters }
    })
  })

export interface Plan {
  readonly windows: ReadonlyArray<WindowWork>
  /** scheduled runs: where each meter's mark moves once the windows are ledgered */
  readonly newDueThrough: Date | undefined
}

/** The windows of this run, oldest first. */
export const plan = (ctx: RunContext) =>
  Effect.gen(function* () {
    if (ctx.range) {
      const byWindow = new Map<number, Set<string>>()
      for (const s of G.windowStarts(ctx.grid, ctx.range.from, ctx.range.to)) byWindow.set(s.getTime(), new Set(ctx.meterIds))
      return { windows: yield* withBounds(ctx.deps, byWindow), newDueThrough: undefined } satisfies Plan
    }
    const planned = yield* planScheduled(ctx)
    return { windows: yield* withBounds(ctx.deps, planned.byWindow), newDueThrough: planned.newDueThrough } satisfies Plan
  })

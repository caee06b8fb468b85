/**
 * The window grid of a tenant environment over time (pure). Changing
 * `aggregation_window_minutes` must never make the ledger send a window's usage twice: progress
 * is kept per window start, so a window re-cut on a new grid would aggregate rows already sent
 * under the old one.
 *
 * The allowed sizes (15|30|60|120|360|720|1440) form a divisibility chain, so of any two grids
 * the finer one holds every boundary of the coarser one. A change appends
 * `(effective_from, minutes)` where `effective_from` is the first boundary of the NEW grid at or
 * after the end of the latest window in the ledger; rows at or after it (changes no window used
 * yet) are replaced. That instant is a boundary of the grid in force just before it (if the new
 * size is the larger, the old one divides it; if the smaller, the ledger's end is an old boundary
 * and so a new one), hence:
 * - no window straddles an `effective_from`;
 * - every window already in the ledger keeps its bounds, so late rows for it become a delta on
 *   the grid it was synced on;
 * - windows after the change start at or after the ledger's end: no start collides with a
 *   ledger window of other bounds.
 * The window of an instant t uses the size in force at t: the newest change with
 * effective_from ≤ t (the first segment starts at −∞). Planning, manual-sync validation and the
 * manual range all go through these functions.
 */
import { DAY_MS, MINUTE_MS, type Window } from "./Windows.js"

/** One grid segment: `minutes` applies from `from` (epoch ms; −Infinity for the first) to the next segment. */
export interface GridSegment {
  readonly from: number
  readonly minutes: number
}

/** Segments oldest first; the first starts at −Infinity. Never empty. */
export type Grid = ReadonlyArray<GridSegment>

const sizeMs = (minutes: number): number => {
  if (!Number.isInteger(minutes) || minutes <= 0 || DAY_MS % (minutes * MINUTE_MS) !== 0)
    throw new Error(`window size must divide a day, got ${minutes} minutes`)
  return minutes * MINUTE_MS
}

/** A grid with one size everywhere. */
export const uniform = (minutes: number): Grid => [{ from: Number.NEGATIVE_INFINITY, minutes }]

/**
 * The grid from stored changes (`from` ascending or not) and the size in force before the first
 * one. With no changes, `initialMinutes` applies everywhere.
 */
export const fromChanges = (initialMinutes: number, changes: ReadonlyArray<GridSegment>): Grid => {
  const sorted = [...changes].sort((a, b) => a.from - b.from)
  return [{ from: Number.NEGATIVE_INFINITY, minutes: initialMinutes }, ...sorted]
}

const segmentIndex = (grid: Grid, at: number): number => {
  let lo = 0
  let hi = grid.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (grid[mid]!.from <= at) lo = mid
    else hi = mid - 1
  }
  return lo
}

/** The size in force at `at`. */
export const minutesAt = (grid: Grid, at: Date | number): number => grid[segmentIndex(grid, +at)]!.minutes

/** The window holding `at`, on the grid in force at `at`. */
export const windowOf = (grid: Grid, at: Date | number): Window => {
  const ms = +at
  const size = sizeMs(minutesAt(grid, ms))
  const start = Math.floor(ms / size) * size
  return { start: new Date(start), end: new Date(start + size) }
}

/** True when `at` starts a window. */
export const isBoundary = (grid: Grid, at: Date | number): boolean => windowOf(grid, at).start.getTime() === +at

/** Starts of the windows overlapping [from, to), oldest first. */
export const windowStarts = (grid: Grid, from: Date | number, to: Date | number): ReadonlyArray<Date> => {
  const out: Array<Date> = []
  for (let w = windowOf(grid, from); w.start.getTime() < +to; w = windowOf(grid, w.end)) out.push(w.start)
  return out
}

/** Windows overlapping [from, to), oldest first. */
export const windowsOverlapping = (grid: Grid, from: Date | number, to: Date | number): ReadonlyArray<Window> =>
  windowStarts(grid, from, to).map((s) => windowOf(grid, s))

/**
 * Exclusive upper bound on the starts of due windows (a window is due at end + grace): the start
 * of the window holding `now − grace` — every earlier window ends by then, it does not.
 */
export const dueThrough = (grid: Grid, now: Date | number, graceMinutes: number): Date =>
  windowOf(grid, +now - graceMinutes * MINUTE_MS).start

/**
 * The grid after `aggregation_window_minutes` goes to `minutes`, given the end of the latest
 * window in the ledger (null: empty ledger — the new size applies everywhere). Changes at or
 * after the new effective instant were never used by a window and are replaced.
 * `effectiveFrom`: where the new size starts (null when it applies everywhere or nothing changes).
 */
export const changeSize = (
  grid: Grid,
  minutes: number,
  ledgerEnd: Date | number | null
): { readonly grid: Grid; readonly effectiveFrom: Date | null } => {
  const size = sizeMs(minutes)
  if (ledgerEnd === null) return { grid: uniform(minutes), effectiveFrom: null }
  const from = Math.ceil(+ledgerEnd / size) * size
  const kept = grid.filter((s, i) => i === 0 || s.from < from)
  if (kept[kept.length - 1]!.minutes === minutes) return { grid: kept, effectiveFrom: null }
  return { grid: [...kept, { from, minutes }], effectiveFrom: new Date(from) }
}

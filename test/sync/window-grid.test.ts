/**
 * The window grid over time (src/sync/WindowGrid.ts), property-tested: windows tile time, no
 * window straddles a size change, and — the money rule — a change of
 * aggregation_window_minutes never re-cuts a window the ledger already holds.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as G from "../../src/sync/WindowGrid.js"
import * as W from "../../src/sync/Windows.js"

const SIZES = [15, 30, 60, 120, 360, 720, 1440] as const
const MIN = 60_000
const T0 = Date.UTC(2026, 10, 1)
const SPAN = 20 * 86_400_000
const instant = fc.integer({ min: T0, max: T0 + SPAN })

type Step = { readonly kind: "ledger"; readonly at: number } | { readonly kind: "change"; readonly minutes: number }
const step: fc.Arbitrary<Step> = fc.oneof(
  instant.map((at) => ({ kind: "ledger", at }) as const),
  fc.constantFrom(...SIZES).map((minutes) => ({ kind: "change", minutes }) as const)
)

/** Replays a history the way the service does: the ledger takes windows of the grid in force; a change applies the rule. */
const replay = (initial: number, steps: ReadonlyArray<Step>) => {
  let grid: G.Grid = G.uniform(initial)
  const ledger = new Map<number, W.Window>()
  let ledgerEnd: number | null = null
  for (const s of steps) {
    if (s.kind === "ledger") {
      const w = G.windowOf(grid, s.at)
      ledger.set(w.start.getTime(), w)
      ledgerEnd = Math.max(ledgerEnd ?? -Infinity, w.end.getTime())
    } else {
      grid = G.changeSize(grid, s.minutes, ledgerEnd).grid
    }
  }
  return { grid, ledger, ledgerEnd }
}

describe("window grid", () => {
  it("examples: 60 → 15 after a synced hour, and back to 60", () => {
    const h = (x: string) => Date.parse(`2026-11-10T${x}:00Z`)
    let grid = G.uniform(60)
    const r1 = G.changeSize(grid, 15, h("13:00"))
    expect(r1.effectiveFrom?.toISOString()).toBe("2026-11-10T13:00:00.000Z")
    grid = r1.grid
    expect(G.windowOf(grid, h("12:20"))).toEqual({ start: new Date(h("12:00")), end: new Date(h("13:00")) })
    expect(G.windowOf(grid, h("13:20"))).toEqual({ start: new Date(h("13:15")), end: new Date(h("13:30")) })
    // ledger now ends at 13:30 (15-minute windows): 60 applies from the next hour
    const r2 = G.changeSize(grid, 60, h("13:30"))
    expect(r2.effectiveFrom?.toISOString()).toBe("2026-11-10T14:00:00.000Z")
    grid = r2.grid
    expect(grid.map((s) => s.minutes)).toEqual([60, 15, 60])
    expect(G.windowOf(grid, h("13:50"))).toEqual({ start: new Date(h("13:45")), end: new Date(h("14:00")) })
    expect(G.windowOf(grid, h("14:50"))).toEqual({ start: new Date(h("14:00")), end: new Date(h("15:00")) })
    expect(G.windowStarts(grid, h("12:30"), h("14:30")).map((d) => d.toISOString().slice(11, 16))).toEqual([
      "12:00",
      "13:00",
      "13:15",
      "13:30",
      "13:45",
      "14:00"
    ])
    // empty ledger: the new size applies everywhere
    expect(G.changeSize(grid, 30, null)).toEqual({ grid: G.uniform(30), effectiveFrom: null })
    // a change no window used yet is replaced, not stacked
    const r3 = G.changeSize(G.changeSize(grid, 1440, h("13:30")).grid, 30, h("13:30"))
    expect(r3.grid.map((s) => [s.from, s.minutes])).toEqual([...grid.slice(0, 2).map((s) => [s.from, s.minutes]), [h("13:30"), 30]])
  })

  it("windows tile time: each holds its instant, starts on its size, and the next starts at its end", () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZES), fc.array(step, { maxLength: 25 }), instant, (initial, steps, t) => {
        const { grid } = replay(initial, steps)
        const w = G.windowOf(grid, t)
        expect(w.start.getTime()).toBeLessThanOrEqual(t)
        expect(w.end.getTime()).toBeGreaterThan(t)
        const size = G.minutesAt(grid, w.start) * MIN
        expect(w.start.getTime() % size).toBe(0)
        expect(w.end.getTime() - w.start.getTime()).toBe(size)
        // the size in force is the same over the whole window: no window straddles a change
        expect(G.minutesAt(grid, w.end.getTime() - 1)).toBe(G.minutesAt(grid, w.start))
        expect(G.windowOf(grid, w.end).start).toEqual(w.end)
        expect(G.windowOf(grid, w.start)).toEqual(w)
      }),
      { numRuns: 500 }
    )
  })

  it("every change starts on a boundary of both the grid before it and its own", () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZES), fc.array(step, { maxLength: 25 }), (initial, steps) => {
        const { grid } = replay(initial, steps)
        for (let i = 1; i < grid.length; i++) {
          expect(grid[i]!.from).toBeGreaterThan(grid[i - 1]!.from)
          expect(grid[i]!.from % (grid[i]!.minutes * MIN)).toBe(0)
          expect(grid[i]!.from % (grid[i - 1]!.minutes * MIN)).toBe(0)
        }
      }),
      { numRuns: 500 }
    )
  })

  it("a change never re-cuts a window the ledger holds, and ledger windows never overlap", () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZES), fc.array(step, { maxLength: 30 }), (initial, steps) => {
        const { grid, ledger } = replay(initial, steps)
        const windows = [...ledger.values()].sort((a, b) => a.start.getTime() - b.start.getTime())
        for (const w of windows) {
          expect(G.windowOf(grid, w.start)).toEqual(w)
          expect(G.windowOf(grid, w.end.getTime() - 1)).toEqual(w)
        }
        for (let i = 1; i < windows.length; i++) expect(windows[i]!.start.getTime()).toBeGreaterThanOrEqual(windows[i - 1]!.end.getTime())
      }),
      { numRuns: 1000 }
    )
  })

  it("dueThrough separates due from not-due windows on a changing grid", () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZES), fc.array(step, { maxLength: 20 }), instant, fc.integer({ min: 0, max: 600 }), (initial, steps, now, grace) => {
        const { grid } = replay(initial, steps)
        const bound = G.dueThrough(grid, now, grace)
        expect(G.isBoundary(grid, bound)).toBe(true)
        const first = G.windowOf(grid, bound)
        expect(W.isDue(first, grace, now)).toBe(false)
        const before = G.windowOf(grid, bound.getTime() - 1)
        expect(W.isDue(before, grace, now)).toBe(true)
        expect(before.end).toEqual(bound)
      }),
      { numRuns: 500 }
    )
  })

  it("windowStarts lists exactly the windows overlapping a range", () => {
    fc.assert(
      fc.property(fc.constantFrom(...SIZES), fc.array(step, { maxLength: 20 }), instant, fc.integer({ min: 1, max: 3 * 86_400_000 }), (initial, steps, from, len) => {
        const { grid } = replay(initial, steps)
        const starts = G.windowStarts(grid, from, from + len)
        expect(starts[0]!.getTime()).toBeLessThanOrEqual(from)
        for (let i = 1; i < starts.length; i++) expect(starts[i]).toEqual(G.windowOf(grid, starts[i - 1]!).end)
        expect(G.windowOf(grid, starts[starts.length - 1]!).end.getTime()).toBeGreaterThanOrEqual(from + len)
        expect(starts[starts.length - 1]!.getTime()).toBeLessThan(from + len)
      }),
      { numRuns: 300 }
    )
  })
})

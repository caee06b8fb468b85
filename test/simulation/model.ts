/**
 * The simulator's vocabulary: one JSON-serialisable record per step, the known-bug flags that
 * gate operations whose rules are not settled yet, and the seeded generator of histories.
 *
 * A history is data, not code: the same step list replays the same operations (`runner.ts`),
 * which is what makes shrinking and regression files possible. Event times are "hours ago"
 * relative to the instant the step runs (the service uses the real clock; see README
 * "## Simulation"), so a replay reproduces the same window structure at any time of day.
 */
import { prng } from "../../src/domain/Prng.js"

/**
 * Operations that hit a product bug being fixed on another branch. `open: true` = the bug is
 * still there: the generator does not produce the operation and regression files that need it
 * are not replayed (the test prints this loudly). Flip `open` to false when the fix lands.
 */
export const KNOWN_BUGS = {
  /** Negative quantities are accepted (202) and dropped by `qty_billable > 0` filters. */
  negative_quantities: { issue: "#12.3", open: false },
  /** Changing aggregation_window_minutes re-sends usage already synced. */
  window_size_change: { issue: "#12.1", open: false },
  /** v1 reused the identifier as Idempotency-Key and Stripe replays a saved 500 for 24 h. */
  v1_saved_500: { issue: "#12.4", open: false },
  /** Future timestamps (> 5 min ahead) are accepted instead of refused with a code. */
  future_timestamps: { issue: "#12.11", open: false },
  /** Whole-unit batches revived after a mapping comes back count their remainder twice. */
  whole_units_revival: { issue: "#12.7", open: false }
} as const satisfies Record<string, { readonly issue: string; readonly open: boolean }>

export type KnownBug = keyof typeof KNOWN_BUGS
export const KNOWN_BUG_NAMES = Object.keys(KNOWN_BUGS) as ReadonlyArray<KnownBug>
export const openBugs = (): ReadonlySet<KnownBug> => new Set(KNOWN_BUG_NAMES.filter((b) => KNOWN_BUGS[b].open))

/** The meters every simulation starts with: two SUM meters on `qty` and one COUNT meter. */
export const METERS = [
  { name: "m0", aggregation: "SUM" },
  { name: "m1", aggregation: "SUM" },
  { name: "m2", aggregation: "COUNT" }
] as const
export type MeterName = (typeof METERS)[number]["name"]

/** Customer ids the generator draws from; ids not created yet make "unknown customer" events. */
export const CUSTOMER_POOL = 10

export interface SimEvent {
  readonly id: string
  readonly customer: string
  readonly meter: MeterName
  /** Window = the UTC hour this many hours before the step runs (≥ 1: always closed). */
  readonly hoursAgo: number
  readonly minute: number
  /** Set instead of `hoursAgo` for a timestamp this many minutes in the future. */
  readonly futureMinutes?: number
  /** Decimal string (SUM meters; COUNT meters ignore it). */
  readonly qty: string
}

export type MeterState = "enabled" | "disabled" | "removed" | "whole" | "fractional"

export type Step =
  | { readonly op: "ingest"; readonly mode: "bulk" | "single"; readonly events: ReadonlyArray<SimEvent> }
  | { readonly op: "customer"; readonly id: string; readonly map: boolean }
  | { readonly op: "map"; readonly id: string }
  | { readonly op: "meter"; readonly meter: MeterName; readonly set: MeterState }
  | { readonly op: "config"; readonly transport: "stream" | "v1"; readonly windowMinutes: number }
  | { readonly op: "fault"; readonly kind: "rate_limit" | "server_error" | "drop" | "outage"; readonly seed: number }
  | { readonly op: "crash"; readonly delayMs: number }
  | { readonly op: "sync" }
  /** Two runs at once (a second replica, or the schedule racing a manual run): one holds the lease. */
  | { readonly op: "concurrent" }
  | { readonly op: "check" }

/** Hours-ago bands: recent, inside Stripe's 35 days, and past it (never near the boundary). */
export const HORIZON_HOURS = 35 * 24
const INSIDE_MAX = HORIZON_HOURS - 24
const OUTSIDE_MIN = HORIZON_HOURS + 24
const OUTSIDE_MAX = 40 * 24

export interface GenerateOptions {
  readonly seed: number
  readonly steps: number
  /** Known bugs whose operations are generated anyway (default: the closed ones only). */
  readonly include?: ReadonlySet<KnownBug>
}

/** The operations a history may use given the open bugs (closed bugs' operations are always in). */
export const allowed = (include: ReadonlySet<KnownBug> | undefined, bug: KnownBug): boolean =>
  !KNOWN_BUGS[bug].open || (include?.has(bug) ?? false)

export const generate = (opts: GenerateOptions): Array<Step> => {
  const rand = prng(opts.seed)
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1))
  const pick = <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(rand() * xs.length)]!
  const ok = (bug: KnownBug) => allowed(opts.include, bug)

  const created = new Set<string>()
  const unmapped = new Set<string>()
  const sent: Array<SimEvent> = []
  const hot: Array<{ customer: string; meter: MeterName; hoursAgo: number }> = []
  let eventNo = 0
  let transport: "stream" | "v1" = "stream"
  let windowMinutes = 60

  const qty = (): string => {
    const r = rand()
    if (ok("negative_quantities") && r < 0.08) return `-${int(0, 20)}.${String(int(0, 999)).padStart(3, "0")}`
    if (r < 0.16) return `0.${String(int(0, 999_999)).padStart(6, "0")}${String(int(1, 999_999)).padStart(6, "0")}` // 12 decimals
    if (r < 0.2) return `${int(1, 9)}${String(int(0, 999_999)).padStart(6, "0")}${String(int(0, 999_999)).padStart(6, "0")}` // ≥ 10^12
    return `${int(0, 99)}.${String(int(0, 999)).padStart(3, "0")}`
  }

  const event = (): SimEvent => {
    const id = `e${eventNo++}`
    if (sent.length > 0 && rand() < 0.1) {
      // a duplicate event_id: same customer and meter, another hour and quantity (first copy wins)
      const first = pick(sent)
      return { ...first, id: first.id, hoursAgo: int(1, 72), minute: int(0, 59), qty: qty() }
    }
    if (ok("future_timestamps") && rand() < 0.04) {
      return { id, customer: `c${int(0, CUSTOMER_POOL - 1)}`, meter: pick(METERS).name, hoursAgo: 0, minute: 0, futureMinutes: int(10, 600), qty: qty() }
    }
    if (hot.length > 0 && rand() < 0.3) {
      // a late event for a (customer, meter, hour) that has had usage before: third, fourth… round
      const k = pick(hot)
      return { id, customer: k.customer, meter: k.meter, hoursAgo: k.hoursAgo, minute: int(0, 59), qty: qty() }
    }
    const band = rand()
    const hoursAgo = band < 0.06 ? int(OUTSIDE_MIN, OUTSIDE_MAX) : band < 0.16 ? int(73, INSIDE_MAX) : int(1, 72)
    const known = [...created]
    const customer = known.length > 0 && rand() < 0.85 ? pick(known) : `c${int(0, CUSTOMER_POOL - 1)}`
    const e: SimEvent = { id, customer, meter: pick(METERS).name, hoursAgo, minute: int(0, 59), qty: qty() }
    if (hot.length < 12) hot.push({ customer: e.customer, meter: e.meter, hoursAgo: e.hoursAgo })
    return e
  }

  const step = (): Step => {
    const r = rand()
    if (r < 0.32) {
      const single = rand() < 0.2
      const events: Array<SimEvent> = []
      const ids = new Set<string>()
      for (let i = 0, n = single ? int(1, 3) : int(3, 25); i < n; i++) {
        const e = event()
        if (ids.has(e.id)) continue // duplicates only across requests: "first copy" is then unambiguous
        ids.add(e.id)
        events.push(e)
      }
      sent.push(...events.filter((e) => e.futureMinutes === undefined))
      return { op: "ingest", mode: single ? "single" : "bulk", events }
    }
    if (r < 0.45) {
      const free = Array.from({ length: CUSTOMER_POOL }, (_, i) => `c${i}`).filter((c) => !created.has(c))
      if (free.length > 0) {
        const id = pick(free)
        const map = rand() < 0.6
        created.add(id)
        if (!map) unmapped.add(id)
        return { op: "customer", id, map }
      }
    }
    if (r < 0.51 && unmapped.size > 0) {
      const id = pick([...unmapped])
      unmapped.delete(id)
      return { op: "map", id }
    }
    if (r < 0.56) {
      const states: Array<MeterState> = ["enabled", "disabled", "removed", "enabled"]
      if (ok("whole_units_revival")) states.push("whole", "fractional")
      return { op: "meter", meter: pick(METERS).name, set: pick(states) }
    }
    if (r < 0.6) {
      transport = transport === "stream" ? "v1" : "stream"
      if (ok("window_size_change") && rand() < 0.5) windowMinutes = pick([15, 30, 60])
      return { op: "config", transport, windowMinutes }
    }
    if (r < 0.68) {
      const kinds: Array<"rate_limit" | "server_error" | "drop" | "outage"> = ["rate_limit", "drop", "outage"]
      if (transport === "stream" || ok("v1_saved_500")) kinds.push("server_error")
      return { op: "fault", kind: pick(kinds), seed: int(1, 1_000_000) }
    }
    if (r < 0.73) return { op: "crash", delayMs: int(0, 250) }
    if (r < 0.76) return { op: "concurrent" }
    if (r < 0.87) return { op: "sync" }
    return { op: "check" }
  }

  return Array.from({ length: opts.steps }, step)
}

/** Known bugs a history exercises (so a regression file says what it needs fixed first). */
export const bugsUsed = (steps: ReadonlyArray<Step>): Array<KnownBug> => {
  const used = new Set<KnownBug>()
  let transport: "stream" | "v1" = "stream"
  for (const s of steps) {
    if (s.op === "ingest") {
      for (const e of s.events) {
        if (e.qty.startsWith("-")) used.add("negative_quantities")
        if (e.futureMinutes !== undefined) used.add("future_timestamps")
      }
    }
    if (s.op === "config") {
      transport = s.transport
      if (s.windowMinutes !== 60) used.add("window_size_change")
    }
    if (s.op === "fault" && s.kind === "server_error" && transport === "v1") used.add("v1_saved_500")
    if (s.op === "meter" && (s.set === "whole" || s.set === "fractional")) used.add("whole_units_revival")
  }
  return [...used]
}

export const describeBugs = (bugs: ReadonlyArray<KnownBug>) => bugs.map((b) => `${b} (${KNOWN_BUGS[b].issue})`).join(", ")

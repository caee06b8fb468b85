/**
 * Window arithmetic of the sync pipeline (pure). Windows are [start, start + minutes), aligned to
 * UTC (every allowed size divides a day, so alignment to the Unix epoch is alignment to UTC
 * midnight). A window is due at `end + grace`; before that it is never synced.
 */

export const MINUTE_MS = 60_000
export const DAY_MS = 24 * 60 * MINUTE_MS

/** Stripe accepts meter event timestamps within the past 35 days. */
export const STRIPE_MAX_AGE_MS = 35 * DAY_MS
/**
 * A window is only written as sendable when its start is at least this much younger than Stripe's
 * 35-day limit, so that a batch created now can still be sent after ordinary retries.
 */
export const CREATE_MARGIN_MS = 60 * MINUTE_MS
/** At send time: a timestamp closer than this to the 35-day limit is not sent (Stripe would refuse it). */
export const SEND_MARGIN_MS = 5 * MINUTE_MS

export interface Window {
  readonly start: Date
  readonly end: Date
}

const sizeMs = (minutes: number): number => {
  if (!Number.isInteger(minutes) || minutes <= 0 || DAY_MS % (minutes * MINUTE_MS) !== 0) {
    throw new Error(`window size must divide a day, got ${minutes} minutes`)
  }
  return minutes * MINUTE_MS
}

/** Start of the window holding `at`. */
export const alignDown = (at: Date | number, minutes: number): Date => {
  const ms = typeof at === "number" ? at : at.getTime()
  const size = sizeMs(minutes)
  return new Date(Math.floor(ms / size) * size)
}

export const windowAt = (start: Date, minutes: number): Window => ({
  start,
  end: new Date(start.getTime() + sizeMs(minutes))
})

export const isAligned = (at: Date, minutes: number): boolean => at.getTime() % sizeMs(minutes) === 0

/** True when `window` may be synced at `now`: its end plus the grace period has passed. */
export const isDue = (window: Window, graceMinutes: number, now: Date | number): boolean =>
  window.end.getTime() + graceMinutes * MINUTE_MS <= (typeof now === "number" ? now : now.getTime())

/**
 * Exclusive upper bound on the starts of due windows: every window starting before it is due,
 * no window starting at or after it is.
 */
export const dueThrough = (now: Date | number, minutes: number, graceMinutes: number): Date => {
  const ms = typeof now === "number" ? now : now.getTime()
  // w due ⇔ w.end ≤ now − grace ⇔ (ends are aligned) w.end ≤ alignDown(now − grace) ⇔ w.start < alignDown(now − grace)
  return new Date(alignDown(ms - graceMinutes * MINUTE_MS, minutes).getTime())
}

/** Starts of the windows in [from, to), `from` aligned down. Oldest first. */
export const windowStarts = (from: Date, to: Date, minutes: number): ReadonlyArray<Date> => {
  const size = sizeMs(minutes)
  const out: Array<Date> = []
  for (let t = alignDown(from, minutes).getTime(); t < to.getTime(); t += size) out.push(new Date(t))
  return out
}

/** True when a batch of this window may still be created as sendable (not too late for Stripe). */
export const withinCreateHorizon = (windowStart: Date, now: Date | number): boolean =>
  windowStart.getTime() >= (typeof now === "number" ? now : now.getTime()) - STRIPE_MAX_AGE_MS + CREATE_MARGIN_MS

/** True when Stripe would still accept a meter event stamped at `windowStart`, with a margin. */
export const withinSendHorizon = (windowStart: Date, now: Date | number): boolean =>
  windowStart.getTime() >= (typeof now === "number" ? now : now.getTime()) - STRIPE_MAX_AGE_MS + SEND_MARGIN_MS

/** Windows (aligned) overlapping [from, to). */
export const windowsOverlapping = (from: Date, to: Date, minutes: number): ReadonlyArray<Window> =>
  windowStarts(from, to, minutes).map((s) => windowAt(s, minutes))

/**
 * The latest due instant at or before `now`: due instants are every window end plus the grace,
 * i.e. `k · size + grace`. At that instant `dueThrough` first includes the window ending `grace`
 * earlier.
 */
export const lastDueAtOrBefore = (now: number, minutes: number, graceMinutes: number): number => {
  const grace = graceMinutes * MINUTE_MS
  return alignDown(now - grace, minutes).getTime() + grace
}

/** The first due instant strictly after `now`. */
export const nextDueAfter = (now: number, minutes: number, graceMinutes: number): number =>
  lastDueAtOrBefore(now, minutes, graceMinutes) + sizeMs(minutes)

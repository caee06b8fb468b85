/**
 * The independent oracle: what Stripe must hold per (Stripe customer, Stripe event name),
 * computed from the generated inputs only, with plain BigInt decimal arithmetic (no product
 * code). The rules it applies are the documented ones (SPEC §4 and §6, README "How sync works"):
 *
 * - the first accepted copy of an `event_id` wins; later copies change nothing;
 * - usage counts for customers that exist and are mapped to a Stripe customer now;
 * - windows older than Stripe's 35-day horizon are never billed (`too_late`);
 * - a timestamp more than 5 minutes ahead is refused (Stripe's rule, SPEC §8 emulator line);
 * - SUM meters add the exact quantities (negative ones too), COUNT meters count events;
 * - Stripe takes at most 15 significant digits a value (the product truncates toward zero and
 *   carries the rest), so Σ sent may fall short of the exact total by less than one unit in the
 *   15th significant digit of the total; never more, never above it;
 * - whole-unit meters send integer parts and carry fractions: short by less than one unit.
 */
import { HORIZON_HOURS, type MeterName, type SimEvent } from "./model.js"

// ---- a tiny exact decimal (BigInt with a fixed scale of 12 digits, the ingest maximum)

const SCALE = 12
const ONE = 10n ** BigInt(SCALE)

export const toFixed = (s: string): bigint => {
  const m = /^([+-]?)(\d+)(?:\.(\d+))?$/.exec(s.trim())
  if (!m) throw new Error(`oracle: not a plain decimal: ${s}`)
  const frac = (m[3] ?? "").padEnd(SCALE, "0")
  if (frac.length > SCALE) throw new Error(`oracle: more than ${SCALE} decimals: ${s}`)
  const v = BigInt(m[2]!) * ONE + BigInt(frac)
  return m[1] === "-" ? -v : v
}

export const fromFixed = (v: bigint): string => {
  const neg = v < 0n
  const a = neg ? -v : v
  const int = a / ONE
  const frac = (a % ONE).toString().padStart(SCALE, "0").replace(/0+$/, "")
  return `${neg ? "-" : ""}${int}${frac ? `.${frac}` : ""}`
}

/** One unit in the 15th significant digit of |v| (at least 10^-12, the finest scale we hold). */
const fifteenthDigitUnit = (v: bigint): bigint => {
  const intDigits = (v < 0n ? -v : v) / ONE === 0n ? 0 : ((v < 0n ? -v : v) / ONE).toString().length
  const exp = intDigits - 15 // unit = 10^exp
  return exp + SCALE <= 0 ? 1n : 10n ** BigInt(exp + SCALE)
}

// ---- the model of inputs

export interface OracleMeter {
  present: boolean
  enabled: boolean
  whole: boolean
  everWhole: boolean
}

export class Oracle {
  /** First accepted copy per event_id. */
  readonly events = new Map<string, SimEvent>()
  readonly customers = new Map<string, { stripeId: string | null }>()
  readonly meters = new Map<MeterName, OracleMeter>()
  readonly aggregation = new Map<MeterName, "SUM" | "COUNT">()

  /** True when the oracle expects the service to refuse this event at ingest. */
  static refused(e: SimEvent): boolean {
    return e.futureMinutes !== undefined && e.futureMinutes > 5
  }

  ingest(e: SimEvent): void {
    if (Oracle.refused(e)) return
    if (!this.events.has(e.id)) this.events.set(e.id, e)
  }

  value(e: SimEvent): bigint {
    return this.aggregation.get(e.meter) === "COUNT" ? ONE : toFixed(e.qty)
  }

  /** Exact billable usage per `${stripeCustomer}|${meter}` (mapped customers, inside 35 days). */
  billable(): Map<string, { exact: bigint; hasNegative: boolean }> {
    const out = new Map<string, { exact: bigint; hasNegative: boolean }>()
    for (const e of this.events.values()) {
      const stripeId = this.customers.get(e.customer)?.stripeId
      if (!stripeId) continue
      if (e.hoursAgo >= HORIZON_HOURS) continue
      const k = `${stripeId}|${e.meter}`
      const v = this.value(e)
      const cur = out.get(k) ?? { exact: 0n, hasNegative: false }
      out.set(k, { exact: cur.exact + v, hasNegative: cur.hasNegative || v < 0n })
    }
    return out
  }

  /**
   * Compares one pair. `got` is what Stripe holds. Returns a description of the violation, or
   * undefined. Meters whose mapping is disabled or removed now may hold less (their usage waits),
   * never more, unless negative corrections are involved (then no bound is sound).
   */
  judge(meter: MeterName, expected: { exact: bigint; hasNegative: boolean }, got: bigint): string | undefined {
    const m = this.meters.get(meter)!
    const { exact } = expected
    const short = exact - got
    if (!m.present || !m.enabled) {
      if (!expected.hasNegative && got > exact) return `meter ${meter} is ${m.present ? "disabled" : "unmapped"}: Stripe holds ${fromFixed(got)}, more than the usage ${fromFixed(exact)}`
      return undefined
    }
    if (m.everWhole) {
      // integer parts sent, fractions carried (also after a switch back: the carry waits for usage)
      if (short < 0n || short >= ONE) return `whole-unit meter ${meter}: expected within one unit below ${fromFixed(exact)}, Stripe has ${fromFixed(got)}`
      return undefined
    }
    if (short === 0n) return undefined
    if (short > 0n && short < fifteenthDigitUnit(exact)) return undefined // Stripe's 15 significant digits
    return `expected ${fromFixed(exact)}, Stripe has ${fromFixed(got)} (${short > 0n ? "missing" : "extra"} ${fromFixed(short < 0n ? -short : short)})`
  }
}

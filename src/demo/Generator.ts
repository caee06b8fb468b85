/**
 * Synthetic usage for the demo: deterministic (seeded PRNG), so the same options always produce
 * the same events and the same totals. The expected totals are computed here, from the raw events
 * the demo sends, with exact decimals — never read back from the service — so the final
 * comparison (generator vs our ledger vs Stripe) is independent.
 */
import * as Decimal from "../domain/Decimal.js"
import { prng } from "../domain/Prng.js"


export const HOUR_MS = 3_600_000

export interface DemoMeterSpec {
  /** Meter name, its event_name and the Stripe meter's event_name (kept equal for readability). */
  readonly name: "api_calls" | "tokens"
  readonly aggregation: "COUNT" | "SUM"
  readonly field: string | null
}

export const DEMO_METERS: ReadonlyArray<DemoMeterSpec> = [
  { name: "api_calls", aggregation: "COUNT", field: null },
  { name: "tokens", aggregation: "SUM", field: "tokens" }
]

export interface UsageEvent {
  readonly event_id: string
  readonly event_name: string
  readonly external_customer_id: string
  readonly timestamp: string
  readonly properties?: Record<string, string>
}

/** Exact totals per (external customer id, meter name). */
export class Totals {
  private readonly parts = new Map<string, Array<string>>()
  private cache: Map<string, string> | undefined

  add(externalId: string, meter: string, qty: string): void {
    const k = `${externalId}\u0000${meter}`
    const list = this.parts.get(k)
    if (list) list.push(qty)
    else this.parts.set(k, [qty])
    this.cache = undefined
  }

  merge(other: Totals): Totals {
    const out = new Totals()
    for (const t of [this, other]) for (const [k, qs] of t.parts) for (const q of qs) out.add(...(k.split("\u0000") as [string, string]), q)
    return out
  }

  private sums(): Map<string, string> {
    if (!this.cache) this.cache = new Map([...this.parts].map(([k, qs]) => [k, Decimal.sum(qs)]))
    return this.cache
  }

  /** "0" when nothing was generated for the pair. */
  get(externalId: string, meter: string): string {
    return this.sums().get(`${externalId}\u0000${meter}`) ?? "0"
  }

  /** Σ over the given customers (all when omitted) for one meter. */
  meterTotal(meter: string, customers?: ReadonlySet<string>): string {
    const values: Array<string> = []
    for (const [k, v] of this.sums()) {
      const [c, m] = k.split("\u0000") as [string, string]
      if (m === meter && (customers === undefined || customers.has(c))) values.push(v)
    }
    return Decimal.sum(values)
  }

  pairs(): ReadonlyArray<{ readonly externalId: string; readonly meter: string; readonly total: string }> {
    return [...this.sums()].map(([k, total]) => {
      const [externalId, meter] = k.split("\u0000") as [string, string]
      return { externalId, meter, total }
    })
  }

  events(meter: string): number {
    let n = 0
    for (const [k, qs] of this.parts) if (k.endsWith(`\u0000${meter}`)) n += qs.length
    return n
  }
}

/** A token quantity with up to 3 decimals ("0.001" … "3999.999"), exact as a string. */
const tokenQty = (rand: () => number): string => {
  const thousandths = 1 + Math.floor(rand() * 3_999_999)
  return Decimal.normalize(`${Math.floor(thousandths / 1000)}.${String(thousandths % 1000).padStart(3, "0")}`)
}

/**
 * `count` events inside [hourStart, hourStart + 1 h), spread over `customers` (external ids),
 * half `api_calls` (counted) and half `tokens` (summed on `properties.tokens`). Event ids are
 * `${idPrefix}-${i}` so a re-sent batch would be deduplicated by the service.
 */
export const generateUsage = (options: {
  readonly seed: number
  readonly count: number
  readonly customers: ReadonlyArray<string>
  readonly hourStart: number
  readonly idPrefix: string
}): { readonly events: ReadonlyArray<UsageEvent>; readonly totals: Totals } => {
  const rand = prng(options.seed)
  const totals = new Totals()
  const events: Array<UsageEvent> = []
  const n = options.customers.length
  for (let i = 0; i < options.count; i++) {
    // A skewed pick (square of a uniform): a few heavy customers and a long tail, like real usage.
    const u = rand()
    const customer = options.customers[Math.min(n - 1, Math.floor(u * u * n))]!
    const timestamp = new Date(options.hourStart + Math.floor(rand() * HOUR_MS)).toISOString()
    const event_id = `${options.idPrefix}-${i}`
    if (rand() < 0.5) {
      events.push({ event_id, event_name: "api_calls", external_customer_id: customer, timestamp })
      totals.add(customer, "api_calls", "1")
    } else {
      const qty = tokenQty(rand)
      events.push({ event_id, event_name: "tokens", external_customer_id: customer, timestamp, properties: { tokens: qty } })
      totals.add(customer, "tokens", qty)
    }
  }
  return { events, totals }
}

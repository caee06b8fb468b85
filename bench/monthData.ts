/**
 * The month of bench/month.ts: one generator formula written three times — ClickHouse SQL,
 * PostgreSQL SQL (both run server-side, nothing crosses the wire per event) and a BigInt oracle
 * in TypeScript that computes the expected month total per (customer, meter) from the same
 * formula without touching either database.
 *
 * Event n (0 ≤ n < N), over a month of `hours` hours starting at S (epoch ms):
 *   timestamp   = S + ⌊n · month_ms / N⌋                (spread evenly: every hour has ≈ N/hours events)
 *   ingested_at = timestamp + (n mod 30011) ms          (ingested within 30 s, as a live feed would be)
 *   customer    = n mod C,  meter = ⌊n / C⌋ mod 2       (every customer on both meters, every hour)
 *   quantity    = meter 0 ("calls", COUNT): 1
 *                 meter 1 ("tokens", SUM):  n mod 500            when n mod 4 = 0 (an integer)
 *                                           (n · 7919 mod 10⁶) / 1000 otherwise (three decimals)
 * Quantities are exact decimals; the oracle keeps them as BigInt thousandths.
 */
import { Sql, literal } from "../src/events/clickhouse/escape.js"

export const HOUR_MS = 3_600_000
/** Upper bound of the ingest delay (ms): the last events of a window are ingested ≤ 30 s after it. */
export const INGEST_SPREAD_MS = 30_011

export interface MonthShape {
  readonly events: number
  readonly hours: number
  /** epoch ms, aligned to an hour */
  readonly start: number
  readonly tenantId: string
  readonly environmentId: string
  /** product customer ids, index = customer number */
  readonly customerIds: ReadonlyArray<string>
  readonly externalIds: ReadonlyArray<string>
  /** [calls, tokens] */
  readonly meterIds: readonly [string, string]
  readonly eventNames: readonly [string, string]
}

const monthMs = (m: MonthShape) => m.hours * HOUR_MS
const VERSION_BASE = 2n ** 42n - 1n // freshVersion(ingested) = 2^42 − 1 − ingested (FirstCopy.ts)

const chArray = (xs: ReadonlyArray<string>) => new Sql(`[${xs.map(literal).join(", ")}]`)

/** The generator's columns for ClickHouse, rows n ∈ [lo, hi) of system.numbers. */
const chSource = (m: MonthShape, lo: number, hi: number) => {
  const c = m.customerIds.length
  return `SELECT number AS n, ${m.start} + intDiv(number * ${monthMs(m)}, ${m.events}) AS ts, ts + (number % ${INGEST_SPREAD_MS}) AS ing,
      number % ${c} AS ci, intDiv(number, ${c}) % 2 AS mi, (number * 7919) % 1000000 AS frac,
      if(mi = 0, toDecimal128(1, 12), if(number % 4 = 0, toDecimal128(number % 500, 12), toDecimal128(frac, 12) / 1000)) AS q,
      if(mi = 0, '{}', concat('{"tokens":', if(number % 4 = 0, toString(number % 500),
        concat(toString(intDiv(frac, 1000)), '.', substring(toString(1000 + frac % 1000), 2, 3))), '}')) AS props
    FROM system.numbers WHERE number >= ${lo} LIMIT ${hi - lo}`
}

/**
 * INSERT … SELECT statements writing events [lo, hi) into the five tables ClickHouse ingest
 * writes (EventStore.insertEvents: events + event_keys; insertProcessed: processed_keys +
 * processed_arrivals + events_processed), with the versions the store gives a first copy.
 */
export const clickhouseInserts = (m: MonthShape, lo: number, hi: number, raw: boolean): Array<{ table: string; sql: Sql }> => {
  const src = chSource(m, lo, hi)
  const scope = `${literal(m.tenantId)}, ${literal(m.environmentId)}`
  const cust = chArray(m.customerIds).text
  const ext = chArray(m.externalIds).text
  const meters = chArray([...m.meterIds]).text
  const names = chArray([...m.eventNames]).text
  const version = `${VERSION_BASE} - ing`
  const out: Array<{ table: string; sql: Sql }> = []
  if (raw) {
    out.push({
      table: "events",
      sql: new Sql(`INSERT INTO events (tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, timestamp,
          timestamp_ms, ingested_at_ms, properties, status, error, version)
        SELECT ${scope}, concat('mo_', toString(n)), arrayElement(${names}, mi + 1), arrayElement(${ext}, ci + 1), arrayElement(${cust}, ci + 1),
          toDateTime(intDiv(ts, 1000)), ts, ing, props, 'processed', '', ${version} FROM (${src})`)
    })
    out.push({
      table: "event_keys",
      sql: new Sql(`INSERT INTO event_keys (tenant_id, environment_id, event_id, timestamp_ms, ingested_at_ms, version)
        SELECT ${scope}, concat('mo_', toString(n)), ts, ing, ${version} FROM (${src})`)
    })
  }
  out.push({
    table: "processed_keys",
    sql: new Sql(`INSERT INTO processed_keys (tenant_id, environment_id, event_id, meter_id, timestamp_ms, ingested_at_ms, version)
      SELECT ${scope}, concat('mo_', toString(n)), arrayElement(${meters}, mi + 1), ts, ing, ${version} FROM (${src})`)
  })
  // before its rows, as ingest writes them (FirstCopy.ts)
  out.push({
    table: "processed_arrivals",
    sql: new Sql(`INSERT INTO processed_arrivals (tenant_id, environment_id, meter_id, ingested_at_ms, event_id, timestamp_ms)
      SELECT ${scope}, arrayElement(${meters}, mi + 1), ing, concat('mo_', toString(n)), ts FROM (${src})`)
  })
  out.push({
    table: "events_processed",
    sql: new Sql(`INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, timestamp,
        timestamp_ms, ingested_at_ms, qty_total, qty_billable, version)
      SELECT ${scope}, concat('mo_', toString(n)), arrayElement(${meters}, mi + 1), arrayElement(${cust}, ci + 1), arrayElement(${names}, mi + 1),
        toDateTime(intDiv(ts, 1000)), ts, ing, q, q, ${version} FROM (${src})`)
  })
  return out
}

/**
 * The generator for PostgreSQL/PGlite as one statement per table over n ∈ [lo, hi): the
 * statement text with `$1..$4` = customer ids, external ids, meter ids, event names (text[]).
 * Returned as text so the caller binds the arrays through its own client.
 */
export const postgresSource = (m: MonthShape, lo: number, hi: number) => {
  const c = m.customerIds.length
  return `SELECT n, ts, ts + (n % ${INGEST_SPREAD_MS}) AS ing, n % ${c} AS ci, (n / ${c}) % 2 AS mi, (n * 7919) % 1000000 AS frac
    FROM (SELECT n, ${m.start}::bigint + (n * ${monthMs(m)}::bigint) / ${m.events} AS ts FROM generate_series(${lo}::bigint, ${hi - 1}::bigint) AS n) g`
}

/** Quantity (numeric) and properties (json text) expressions over postgresSource's columns. */
export const postgresQty = `CASE WHEN mi = 0 THEN 1::numeric WHEN n % 4 = 0 THEN (n % 500)::numeric ELSE frac::numeric / 1000 END`
export const postgresProps = `CASE WHEN mi = 0 THEN '{}' WHEN n % 4 = 0 THEN '{"tokens":' || (n % 500) || '}'
  ELSE '{"tokens":' || (frac / 1000) || '.' || lpad((frac % 1000)::text, 3, '0') || '}' END`

/**
 * The oracle: expected month total per (customer index, meter index) in thousandths, BigInt,
 * straight from the formula (no database involved). Key: `${ci}|${mi}`.
 */
export const oracleThousandths = (events: number, customers: number): Map<string, bigint> => {
  const sums = new Map<string, bigint>()
  for (let n = 0; n < events; n++) {
    const ci = n % customers
    const mi = Math.floor(n / customers) % 2
    const v = mi === 0 ? 1000 : n % 4 === 0 ? (n % 500) * 1000 : (n * 7919) % 1_000_000
    const k = `${ci}|${mi}`
    sums.set(k, (sums.get(k) ?? 0n) + BigInt(v))
  }
  return sums
}

/** BigInt thousandths as a decimal string ("12.345", "7", "-0.5" never occurs: sums are ≥ 0). */
export const fromThousandths = (t: bigint): string => {
  const whole = t / 1000n
  const frac = (t % 1000n).toString().padStart(3, "0").replace(/0+$/, "")
  return frac === "" ? whole.toString() : `${whole}.${frac}`
}

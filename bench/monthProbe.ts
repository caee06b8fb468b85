/**
 * Reads a month left in ClickHouse by bench/month.ts (when its sync could not run) through the
 * product's EventStore, beside the engine's limit (not a test):
 * - the window aggregate (EventStore.aggregateBillable) vs a plain GROUP BY, interleaved;
 * - the scheduled run's planning query (EventStore.windowsWithLateRows) for one hour of
 *   ingestion (each hourly run) and for the whole month (a meter's first run, or a catch-up of
 *   more than 8 windows), with the product's 300 s request timeout lifted to measure it.
 *
 *   npx tsx bench/monthProbe.ts URL DATABASE TENANT ENVIRONMENT METER_A METER_B MONTH_START_ISO [--hours 720] [--sample-every 30]
 */
import { Chunk, Duration, Effect, Stream } from "effect"
import type { TenantScope } from "../src/domain/Ids.js"
import { fromClient } from "../src/events/ClickHouseEventStore.js"
import { makeClient, resolveConnection } from "../src/events/clickhouse/Client.js"
import { sql } from "../src/events/clickhouse/escape.js"
import { HOUR_MS, INGEST_SPREAD_MS } from "./monthData.js"

const [url, database, tenantId, environmentId, meterA, meterB, startIso] = process.argv.slice(2)
const opt = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : fallback
}
const HOURS = opt("hours", 720)
const EVERY = opt("sample-every", 30)
const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 })
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const probe = Effect.gen(function* () {
  const ch = yield* makeClient(resolveConnection({ url: url!, database: database!, requestTimeoutMs: 3_600_000 }))
  const store = fromClient(ch)
  const scope = { tenantId: tenantId!, environmentId: environmentId! } as TenantScope
  const meterIds = [meterA!, meterB!]
  const start = Date.parse(startIso!)
  const timed = <A, E>(e: Effect.Effect<A, E>) => Effect.map(Effect.timed(e), ([d, a]) => [Duration.toMillis(d), a] as const)
  const product: Array<number> = []
  const plain: Array<number> = []
  for (let w = 0; w < HOURS; w += EVERY) {
    const from = start + w * HOUR_MS
    const [pm, groups] = yield* timed(
      Stream.runCollect(store.aggregateBillable({ scope, windowStart: new Date(from), windowEnd: new Date(from + HOUR_MS), ingestedBefore: new Date(), meterIds, pageSize: 10_000 }))
    )
    const [gm, rows] = yield* timed(
      ch.query(
        "probe",
        sql`SELECT customer_id, meter_id, event_name, toString(sum(qty_billable)) AS q, count() AS k FROM events_processed
          WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
            AND timestamp >= toDateTime(${from / 1000}) AND timestamp < toDateTime(${from / 1000 + 3600}) GROUP BY customer_id, meter_id, event_name`
      )
    )
    product.push(pm)
    plain.push(gm)
    console.log(`window ${w}: product ${fmt(pm)} ms (${Chunk.size(groups)} groups), plain GROUP BY ${fmt(gm)} ms (${rows.length} groups)`)
  }
  console.log(`window aggregate, ${product.length} windows: product median ${fmt(median(product))} ms, plain GROUP BY median ${fmt(median(plain))} ms → ${(median(product) / median(plain)).toFixed(2)}×`)
  // One hourly run's planning: rows ingested during the hour before a window's due time, per meter.
  const due = start + 400 * HOUR_MS + 5 * 60_000
  for (const meter of meterIds) {
    const [ms, starts] = yield* timed(
      store.windowsWithLateRows({ scope, ingestedAfter: new Date(due - HOUR_MS), ingestedBefore: new Date(due + INGEST_SPREAD_MS), windowMinutes: 60, meterIds: [meter] })
    )
    console.log(`planning, one hour of ingestion, one meter: ${fmt(ms)} ms (${starts.length} windows)`)
  }
  const [ms, starts] = yield* timed(store.windowsWithLateRows({ scope, ingestedAfter: new Date(0), ingestedBefore: new Date(), windowMinutes: 60, meterIds: [meterA!] }))
  console.log(`planning, the whole month, one meter (first run / catch-up > 8 windows): ${fmt(ms)} ms (${starts.length} windows)`)
}).pipe(Effect.scoped)

Effect.runPromise(probe).catch((e) => {
  console.error(e)
  process.exit(1)
})

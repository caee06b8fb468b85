/**
 * ClickHouse event-store benchmark (not a test: nothing is asserted about time).
 *
 *   npx tsx bench/clickhouse.ts [http://127.0.0.1:8123]
 *
 * Measures, in database `flexprice_bench` (each run in a fresh tenant):
 * - insertEvents and insertProcessed throughput (batches of 1,000, through the EventStore);
 * - aggregateBillable for one hour holding 60,000 processed rows (SPEC's peak);
 * - aggregateBillable for one hour holding 10,000,000 rows (generated server-side from
 *   system.numbers), next to the same GROUP BY run by `clickhouse-client --time`.
 */
import { Chunk, Effect, Stream } from "effect"
import { spawnSync } from "node:child_process"
import { pathToFileURL } from "node:url"
import { newId, TenantScope } from "../src/domain/Ids.js"
import { fromClient } from "../src/events/ClickHouseEventStore.js"
import { makeClient, resolveConnection } from "../src/events/clickhouse/Client.js"
import { ClickHouseMigrator } from "../src/events/clickhouse/Migrator.js"
import { Sql, sql } from "../src/events/clickhouse/escape.js"
import type { AggregateQuery, ProcessedEvent, StoredEvent } from "../src/events/EventStore.js"

export interface BenchResult {
  readonly name: string
  readonly value: string
  readonly detail: string
}

const HOUR = new Date("2025-03-01T10:00:00.000Z")
const BIG_HOUR = new Date("2025-03-02T10:00:00.000Z")
const BATCH = 1_000

const now = () => performance.now()
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

/** Runs the whole benchmark; `database` is created and migrated if needed. */
export const benchClickHouse = (url: string, options: { readonly database?: string; readonly bigRows?: number } = {}) =>
  Effect.gen(function* () {
    const database = options.database ?? "flexprice_bench"
    const bigRows = options.bigRows ?? 10_000_000
    const connection = resolveConnection({ url, database })
    const bootstrap = yield* makeClient(connection, "default")
    const ch = yield* makeClient(connection)
    yield* ClickHouseMigrator({ bootstrap, client: ch })
    const store = fromClient(ch)
    const version = String((yield* ch.query("bench", new Sql("SELECT version() AS v")))[0]!["v"])
    const results: Array<BenchResult> = []
    const scope = new TenantScope({ tenantId: newId.tenant(), environmentId: newId.environment() })

    // 1. raw events through insertEvents (existence check + two inserts per batch)
    const eventBatches = 50
    let t = now()
    for (let b = 0; b < eventBatches; b++) {
      const batch: Array<StoredEvent> = []
      for (let i = 0; i < BATCH; i++) {
        const n = b * BATCH + i
        batch.push({
          tenantId: scope.tenantId,
          environmentId: scope.environmentId,
          eventId: `evt_${n}`,
          eventName: "api_call",
          externalCustomerId: `ext_${n % 100}`,
          customerId: `cust_${n % 100}`,
          timestamp: new Date(HOUR.getTime() + Math.floor((n * 3_600_000) / (eventBatches * BATCH))),
          ingestedAt: new Date(HOUR.getTime() + 3_600_000),
          propertiesJson: `{"tokens":${(n % 7) + 0.1}}`,
          status: "processed",
          error: null
        })
      }
      yield* store.insertEvents(batch)
    }
    let secs = (now() - t) / 1000
    results.push({ name: "insertEvents", value: `${fmt((eventBatches * BATCH) / secs)} events/s`, detail: `${eventBatches} batches of ${BATCH}` })

    // 2. processed rows: one hour at SPEC's peak, 60,000 rows, 100 customers x 2 meters
    const peak = 60_000
    t = now()
    for (let b = 0; b < peak / BATCH; b++) {
      const batch: Array<ProcessedEvent> = []
      for (let i = 0; i < BATCH; i++) {
        const n = b * BATCH + i
        batch.push({
          tenantId: scope.tenantId,
          environmentId: scope.environmentId,
          eventId: `evt_${n}`,
          customerId: `cust_${n % 100}`,
          meterId: n % 2 === 0 ? "mtr_a" : "mtr_b",
          eventName: "api_call",
          timestamp: new Date(HOUR.getTime() + Math.floor((n * 3_600_000) / peak)),
          ingestedAt: new Date(HOUR.getTime() + 3_600_000),
          qtyTotal: "0.1",
          qtyBillable: "0.1"
        })
      }
      yield* store.insertProcessed(batch)
    }
    secs = (now() - t) / 1000
    results.push({ name: "insertProcessed", value: `${fmt(peak / secs)} rows/s`, detail: `${peak / BATCH} batches of ${BATCH}` })

    const query = (windowStart: Date, pageSize: number): AggregateQuery => ({
      scope,
      windowStart,
      windowEnd: new Date(windowStart.getTime() + 3_600_000),
      ingestedBefore: new Date(windowStart.getTime() + 2 * 3_600_000),
      meterIds: ["mtr_a", "mtr_b"],
      pageSize
    })
    const timeAggregate = (q: AggregateQuery, runs: number) =>
      Effect.gen(function* () {
        const times: Array<number> = []
        let groups = 0
        let total = 0
        for (let r = 0; r < runs; r++) {
          const start = now()
          const chunk = yield* Stream.runCollect(store.aggregateBillable(q))
          times.push(now() - start)
          groups = Chunk.size(chunk)
          total = Chunk.reduce(chunk, 0, (acc, g) => acc + g.eventCount)
        }
        return { ms: median(times), groups, total }
      })

    const small = yield* timeAggregate(query(HOUR, 10_000), 7)
    results.push({
      name: "aggregate 1 h, 60k rows",
      value: `${fmt(small.ms, 1)} ms`,
      detail: `median of 7; ${small.groups} groups, ${small.total} rows, one page`
    })
    const smallPaged = yield* timeAggregate(query(HOUR, 50), 3)
    results.push({
      name: "aggregate 1 h, 60k rows, pages of 50",
      value: `${fmt(smallPaged.ms, 1)} ms`,
      detail: `median of 3; ${Math.ceil(smallPaged.groups / 50)} pages (each page re-aggregates the window)`
    })

    // 3. 10M rows in one hour, generated server-side, 1,000 customers x 2 meters
    const startS = BIG_HOUR.getTime() / 1000
    const ingestedMs = BIG_HOUR.getTime() + 3_600_000
    t = now()
    yield* ch.command(
      "bench",
      sql`INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, timestamp,
            timestamp_ms, ingested_at_ms, qty_total, qty_billable, version)
          SELECT ${scope.tenantId}, ${scope.environmentId}, concat('big_', toString(number)),
                 if(number % 2 = 0, 'mtr_a', 'mtr_b'), concat('cust_', toString(intDiv(number, 2) % 1000)), 'api_call',
                 toDateTime(${startS} + intDiv(number * 3600, ${bigRows})),
                 ${BIG_HOUR.getTime()} + intDiv(number * 3600000, ${bigRows}), ${ingestedMs},
                 toDecimal128('0.1', 12), toDecimal128('0.1', 12), ${2n ** 42n - 1n - BigInt(ingestedMs)}
          FROM system.numbers LIMIT ${bigRows}`
    )
    secs = (now() - t) / 1000
    results.push({ name: `generate ${fmt(bigRows)} rows server-side`, value: `${fmt(bigRows / secs)} rows/s`, detail: `INSERT ... SELECT FROM system.numbers, ${fmt(secs, 1)} s` })

    const big = yield* timeAggregate(query(BIG_HOUR, 10_000), 3)
    results.push({
      name: `aggregate 1 h, ${fmt(bigRows)} rows`,
      value: `${fmt(big.ms, 0)} ms`,
      detail: `median of 3 through the EventStore; ${big.groups} groups, ${big.total} rows`
    })

    // The same GROUP BY, as one typed into clickhouse-client (first page, which is the whole result here).
    const q = query(BIG_HOUR, 10_000)
    const handSql = `SELECT c, m, n, toString(sum(qb)) AS quantity, count() AS event_count FROM (
        SELECT meter_id AS m, event_id AS e, min(ingested_at_ms) AS first_ingested, argMin(qty_billable, ingested_at_ms) AS qb,
               argMin(customer_id, ingested_at_ms) AS c, argMin(event_name, ingested_at_ms) AS n
        FROM ${database}.events_processed
        WHERE tenant_id = '${scope.tenantId}' AND environment_id = '${scope.environmentId}'
          AND timestamp >= toDateTime(${startS}) AND timestamp <= toDateTime(${startS + 3600})
          AND timestamp_ms >= ${q.windowStart.getTime()} AND timestamp_ms < ${q.windowEnd.getTime()}
          AND meter_id IN ('mtr_a', 'mtr_b')
        GROUP BY m, e)
      WHERE first_ingested <= ${q.ingestedBefore.getTime()} AND qb > 0
      GROUP BY c, m, n ORDER BY c, m, n LIMIT 10000`
    const cli = clickhouseClientTime(handSql, 3)
    results.push({
      name: `clickhouse-client --time, same GROUP BY`,
      value: cli === undefined ? "n/a" : `${fmt(cli * 1000, 0)} ms`,
      detail: cli === undefined ? "clickhouse-client not found" : "median of 3, FORMAT Null"
    })
    // A plain GROUP BY without the first-copy deduplication, for scale.
    const plainSql = `SELECT customer_id, meter_id, event_name, toString(sum(qty_billable)), count()
      FROM ${database}.events_processed
      WHERE tenant_id = '${scope.tenantId}' AND environment_id = '${scope.environmentId}'
        AND timestamp_ms >= ${q.windowStart.getTime()} AND timestamp_ms < ${q.windowEnd.getTime()}
      GROUP BY customer_id, meter_id, event_name`
    const plain = clickhouseClientTime(plainSql, 3)
    results.push({
      name: `clickhouse-client --time, GROUP BY without dedup`,
      value: plain === undefined ? "n/a" : `${fmt(plain * 1000, 0)} ms`,
      detail: "median of 3; what deduplication costs"
    })
    const totalRow = yield* ch.query(
      "bench",
      sql`SELECT toString(sum(qty_billable)) AS s FROM events_processed WHERE tenant_id = ${scope.tenantId} AND timestamp >= toDateTime(${startS})`
    )
    results.push({ name: "10M x 0.1 server sum", value: String(totalRow[0]!["s"]), detail: "exact Decimal(38,12)" })

    // the big tenant is bench data only: drop its partition rows to keep the database small
    yield* ch.command("bench", sql`ALTER TABLE events_processed DELETE WHERE tenant_id = ${scope.tenantId}`)
    return { version, results }
  }).pipe(Effect.scoped)

/** Median of the elapsed seconds that `clickhouse-client --time` prints on stderr; undefined without the client. */
const clickhouseClientTime = (query: string, runs: number): number | undefined => {
  const times: Array<number> = []
  for (let i = 0; i < runs; i++) {
    const r = spawnSync("clickhouse-client", ["--time", "--format", "Null", "--query", query], { encoding: "utf8" })
    if (r.error) return undefined
    if (r.status !== 0) throw new Error(`clickhouse-client failed: ${r.stderr}`)
    const n = Number(r.stderr.trim().split(/\s+/).pop())
    if (Number.isFinite(n)) times.push(n)
  }
  return times.length ? median(times) : undefined
}

export const printResults = (version: string, results: ReadonlyArray<BenchResult>) => {
  const w1 = Math.max(...results.map((r) => r.name.length))
  const w2 = Math.max(...results.map((r) => r.value.length))
  console.log(`ClickHouse ${version}`)
  for (const r of results) console.log(`${r.name.padEnd(w1)}  ${r.value.padStart(w2)}  ${r.detail}`)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const url = process.argv[2] ?? process.env["FLEXPRICE_CLICKHOUSE_URL"] ?? "http://127.0.0.1:8123"
  Effect.runPromise(benchClickHouse(url)).then(
    ({ version, results }) => printResults(version, results),
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}

/**
 * ClickHouse event-store benchmark (not a test: nothing is asserted about time).
 *
 *   npx tsx bench/clickhouse.ts [http://127.0.0.1:8123] [--rows 10000000]
 *
 * Measures, in database `flexprice_bench` (each run in a fresh tenant):
 * - insertEvents and insertProcessed throughput (batches of 1,000, through the EventStore;
 *   insertProcessed includes the ingest deduplication: claim lookup, claims, rows);
 * - aggregateBillable for one hour holding 60,000 processed rows (SPEC's peak);
 * - one hour holding `--rows` rows (generated server-side from system.numbers), read in the same
 *   run, interleaved, medians of 7: the product (EventStore.aggregateBillable: plain GROUP BY
 *   beside the duplicate audit); the product as it was at f69bb30 (its two statements verbatim);
 *   two ablations of the product (audit and page one after the other; the audit at
 *   max_threads = 1); the first page alone; the audit alone; the read-time exact deduplication
 *   (the fallback); and the engine's limit: a plain GROUP BY over the same rows, sent over the
 *   same HTTP client. Ratios are to that limit, in wall time and in the server's CPU time.
 */
import { Chunk, Effect, Option, Stream } from "effect"
import { pathToFileURL } from "node:url"
import { newId, TenantScope } from "../src/domain/Ids.js"
import { fromClient } from "../src/events/ClickHouseEventStore.js"
import { auditSql, makeAggregate, pageSql } from "../src/events/clickhouse/Aggregate.js"
import { makeClient, resolveConnection } from "../src/events/clickhouse/Client.js"
import { ClickHouseMigrator } from "../src/events/clickhouse/Migrator.js"
import { Sql, sql } from "../src/events/clickhouse/escape.js"
import { EventStoreError, type AggregateQuery, type ProcessedEvent, type StoredEvent } from "../src/events/EventStore.js"

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

    // 2. processed rows: one hour at SPEC's peak, 60,000 rows, 100 customers x 2 meters. Their own
    // event ids: rows of step 1's ids at other instants would be refused by the ingest check as
    // copies of those events, and the hour would hold a sixth of the rows it claims to.
    const peak = 60_000
    t = now()
    for (let b = 0; b < peak / BATCH; b++) {
      const batch: Array<ProcessedEvent> = []
      for (let i = 0; i < BATCH; i++) {
        const n = b * BATCH + i
        batch.push({
          tenantId: scope.tenantId,
          environmentId: scope.environmentId,
          eventId: `pev_${n}`,
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
    if (small.total !== peak) return yield* Effect.dieMessage(`the peak hour read ${small.total} rows, not the ${peak} written`)
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

    // 3. `bigRows` rows in one hour, generated server-side, 1,000 customers x 2 meters
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

    // The four reads of the big hour, interleaved so that load changes hit them alike.
    const q = query(BIG_HOUR, 10_000)
    const reads = makeAggregate(ch, (operation, f) =>
      Effect.try({ try: f, catch: (cause) => new EventStoreError({ backend: "clickhouse", operation, cause }) })
    )
    const plainSql = sql`SELECT customer_id, meter_id, event_name, toString(sum(qty_billable)) AS q, count() AS k
      FROM events_processed
      WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
        AND timestamp >= toDateTime(${startS}) AND timestamp < toDateTime(${startS + 3600})
      GROUP BY customer_id, meter_id, event_name`
    const collect = (stream: Stream.Stream<{ readonly eventCount: number }, EventStoreError>) =>
      Effect.map(Stream.runCollect(stream), (c) => ({ groups: Chunk.size(c), rows: Chunk.reduce(c, 0, (n, g) => n + g.eventCount) }))
    const countRows = (rows: ReadonlyArray<Record<string, unknown>>, key: string) => ({
      groups: rows.length,
      rows: rows.reduce((n, r) => n + Number(r[key]), 0)
    })
    // The product as it was at f69bb30, statement for statement: the page bounded by seconds AND
    // milliseconds, the audit hashing the two strings on every row, both sent at once.
    const where = sql`tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
      AND timestamp >= toDateTime(${startS}) AND timestamp <= toDateTime(${startS + 3600})
      AND timestamp_ms >= ${BIG_HOUR.getTime()} AND timestamp_ms < ${BIG_HOUR.getTime() + 3_600_000}
      AND meter_id IN ${q.meterIds}`
    const beforePage = sql`SELECT customer_id AS c, meter_id AS m, event_name AS n, toString(sum(qty_billable)) AS quantity, count() AS event_count
      FROM events_processed
      WHERE ${where} AND ingested_at_ms <= ${q.ingestedBefore.getTime()} AND qty_billable <> 0
      GROUP BY c, m, n
      ORDER BY c, m, n
      LIMIT ${q.pageSize}`
    const beforeAudit = sql`SELECT count() AS row_count, uniqExact(cityHash64(event_id, meter_id)) AS pair_count FROM events_processed WHERE ${where}`
    const firstPage = pageSql("plain", q, Option.none())
    const ways = [
      { name: "product: page + audit beside it", run: collect(store.aggregateBillable(q)) },
      {
        name: "before (f69bb30): ms-bounded page + string audit",
        run: Effect.map(Effect.all([ch.query("bench", beforeAudit), ch.query("bench", beforePage)], { concurrency: 2 }), ([, rows]) =>
          countRows(rows, "event_count"))
      },
      {
        name: "ablation: audit, then page (one after the other)",
        run: Effect.zipRight(reads.audit(q), Effect.map(ch.query("bench", firstPage), (rows) => countRows(rows, "event_count")))
      },
      {
        name: "ablation: audit at max_threads = 1 beside the page",
        run: Effect.map(Effect.all([ch.query("bench", new Sql(`${auditSql(q).text} SETTINGS max_threads = 1`)), ch.query("bench", firstPage)], { concurrency: 2 }), ([, rows]) =>
          countRows(rows, "event_count"))
      },
      { name: "page alone", run: collect(reads.readPath("plain", q)) },
      { name: "audit alone", run: Effect.map(reads.audit(q), (a) => ({ groups: 1, rows: a.rows })) },
      { name: "exact read-time dedup (fallback)", run: collect(reads.readPath("exact", q)) },
      { name: "engine limit: plain GROUP BY", run: Effect.map(ch.query("bench", plainSql), (rows) => countRows(rows, "k")) }
    ] as const
    const limit = ways.length - 1
    const rounds = 7
    // The server's CPU time (user + system, all query threads) around each read: other helpers
    // load the machine's cores, which stretches wall times but not the CPU a query costs. Valid
    // while nothing else queries this server (check system.processes if in doubt).
    const serverCpuMs = Effect.map(
      ch.query("bench", new Sql("SELECT toString(sum(value)) AS us FROM system.events WHERE event IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds')")),
      (rows) => Number(rows[0]!["us"]) / 1000
    )
    const times = ways.map(() => [] as Array<number>)
    const cpu = ways.map(() => [] as Array<number>)
    const seen = ways.map(() => ({ groups: 0, rows: 0 }))
    for (let r = 0; r < rounds; r++) {
      for (let w = 0; w < ways.length; w++) {
        const cpu0 = yield* serverCpuMs
        const start = now()
        seen[w] = yield* ways[w]!.run
        times[w]!.push(now() - start)
        cpu[w]!.push((yield* serverCpuMs) - cpu0)
      }
    }
    for (let w = 0; w < ways.length; w++) {
      if (seen[w]!.rows !== bigRows) return yield* Effect.dieMessage(`${ways[w]!.name} read ${seen[w]!.rows} rows, not the ${bigRows} written`)
    }
    const limitMs = median(times[limit]!)
    const limitCpu = median(cpu[limit]!)
    ways.forEach((way, w) => {
      const ms = median(times[w]!)
      const cpuMs = median(cpu[w]!)
      results.push({
        name: `1 h of ${fmt(bigRows)} rows: ${way.name}`,
        value: `${fmt(ms, 0)} ms`,
        detail:
          `${fmt(ms / limitMs, 2)}x the plain GROUP BY; server CPU ${fmt(cpuMs, 0)} ms, ${fmt(cpuMs / limitCpu, 2)}x; ` +
          `medians of ${rounds} (${times[w]!.map((t) => fmt(t, 0)).join(", ")}); ${seen[w]!.groups} groups, ${fmt(seen[w]!.rows)} rows`
      })
    })
    const totalRow = yield* ch.query(
      "bench",
      sql`SELECT toString(sum(qty_billable)) AS s FROM events_processed WHERE tenant_id = ${scope.tenantId} AND timestamp >= toDateTime(${startS})`
    )
    results.push({ name: `${fmt(bigRows)} x 0.1 server sum`, value: String(totalRow[0]!["s"]), detail: "exact Decimal(38,12)" })

    // the big tenant is bench data only: drop its partition rows to keep the database small
    yield* ch.command("bench", sql`ALTER TABLE events_processed DELETE WHERE tenant_id = ${scope.tenantId}`)
    yield* ch.command("bench", sql`ALTER TABLE processed_keys DELETE WHERE tenant_id = ${scope.tenantId}`)
    return { version, results }
  }).pipe(Effect.scoped)

export const printResults = (version: string, results: ReadonlyArray<BenchResult>) => {
  const w1 = Math.max(...results.map((r) => r.name.length))
  const w2 = Math.max(...results.map((r) => r.value.length))
  console.log(`ClickHouse ${version}`)
  for (const r of results) console.log(`${r.name.padEnd(w1)}  ${r.value.padStart(w2)}  ${r.detail}`)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2)
  const rowsAt = args.indexOf("--rows")
  const bigRows = rowsAt >= 0 ? Number(args[rowsAt + 1]) : undefined
  if (bigRows !== undefined && (!Number.isSafeInteger(bigRows) || bigRows < 1)) throw new Error("--rows takes a positive integer")
  const positional = args.filter((_, i) => i !== rowsAt && i !== rowsAt + 1)
  const url = positional[0] ?? process.env["FLEXPRICE_CLICKHOUSE_URL"] ?? "http://127.0.0.1:8123"
  Effect.runPromise(benchClickHouse(url, { bigRows })).then(
    ({ version, results }) => printResults(version, results),
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}

/**
 * The scheduled run's planning read on a month in ClickHouse (issue #16 item 2; not a test): the
 * product's EventStore.windowsWithLateRows (over `processed_arrivals`, migration 0005) beside the
 * statement it replaced (over `events_processed` alone, kept here verbatim as the baseline), on the
 * same data in the same run, with the rows each reads (`statistics.rows_read`, FORMAT JSON).
 * Also times migration 0005's backfill on the generated month (what an existing database pays once).
 *
 *   npx tsx bench/monthPlanning.ts --clickhouse http://127.0.0.1:8123 --events 25000000 [--customers 1000] [--baseline-month]
 *
 * Data: bench/monthData.ts's month (processed rows and claims only: planning reads nothing else),
 * ending 3 days before now as in bench/month.ts. The arrivals are written by the migration's own
 * backfill statement, timed.
 */
import { Duration, Effect } from "effect"
import * as os from "node:os"
import type { TenantScope } from "../src/domain/Ids.js"
import { fromClient } from "../src/events/ClickHouseEventStore.js"
import { makeClient, resolveConnection } from "../src/events/clickhouse/Client.js"
import { ClickHouseMigrator, defaultMigrationsDir, loadMigrations } from "../src/events/clickhouse/Migrator.js"
import { Sql, sql } from "../src/events/clickhouse/escape.js"
import { machine } from "./harness.js"
import { clickhouseInserts, HOUR_MS, INGEST_SPREAD_MS, type MonthShape } from "./monthData.js"

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
const url = arg("clickhouse") ?? "http://127.0.0.1:8123"
const EVENTS = Number(arg("events") ?? 2_500_000)
const CUSTOMERS = Number(arg("customers") ?? 1000)
const HOURS = 720
const t = () => new Date().toISOString().slice(11, 19)
const fmt = (n: number, d = 0) => n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d })

/** The statement before migration 0005 (ClickHouseEventStore.ts at 736c0f0), for one meter. */
const baseline = (scope: TenantScope, meterId: string, afterMs: number, beforeMs: number, windowMs: number) =>
  sql`SELECT DISTINCT intDiv(ts, ${windowMs}) * ${windowMs} AS window_start FROM (
      SELECT argMin(timestamp_ms, ingested_at_ms) AS ts, min(ingested_at_ms) AS first_ingested
      FROM events_processed
      WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND meter_id IN ${[meterId]}
        AND (event_id, meter_id) IN (
          SELECT event_id, meter_id FROM events_processed
          WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND meter_id IN ${[meterId]}
            AND ingested_at_ms > ${afterMs} AND ingested_at_ms <= ${beforeMs})
      GROUP BY event_id, meter_id
    )
    WHERE first_ingested > ${afterMs} AND first_ingested <= ${beforeMs}
    ORDER BY window_start`

const main = Effect.gen(function* () {
  const database = `flexprice_bench_plan_${Date.now().toString(36)}`
  console.log(`# planning bench on ${machine()}, ${new Date().toISOString()}, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`)
  const bootstrap = yield* makeClient(resolveConnection({ url, database: "default" }), "default")
  const ch = yield* makeClient(resolveConnection({ url, database, requestTimeoutMs: 3_600_000 }), database)
  yield* Effect.addFinalizer(() => Effect.orDie(bootstrap.command("bench", new Sql(`DROP DATABASE IF EXISTS ${database}`))))
  yield* ClickHouseMigrator({ bootstrap, client: ch })
  const scope = { tenantId: "tnt_month", environmentId: "env_month" } as TenantScope
  const start = Math.floor(Date.now() / (24 * HOUR_MS)) * 24 * HOUR_MS - (HOURS / 24 + 3) * 24 * HOUR_MS
  const shape: MonthShape = {
    events: EVENTS, hours: HOURS, start, ...scope,
    customerIds: Array.from({ length: CUSTOMERS }, (_, i) => `cus_${i}`),
    externalIds: Array.from({ length: CUSTOMERS }, (_, i) => `ext_${i}`),
    meterIds: ["mtr_calls", "mtr_tokens"], eventNames: ["month_calls", "month_tokens"]
  }
  const timed = <A, E>(e: Effect.Effect<A, E>) => Effect.map(Effect.timed(e), ([d, a]) => [Duration.toMillis(d), a] as const)
  console.log(t(), `events ${fmt(EVENTS)}, ${CUSTOMERS} customers × 2 meters, month ${new Date(start).toISOString()} + ${HOURS} h`)
  for (const ins of clickhouseInserts(shape, 0, EVENTS, false).filter((i) => i.table !== "processed_arrivals")) {
    const [ms] = yield* timed(ch.command("bench", ins.sql))
    console.log(t(), `  ${ins.table}: ${fmt(EVENTS)} rows in ${fmt(ms / 1000, 1)} s`)
  }
  const backfill = loadMigrations(defaultMigrationsDir()).find((m) => m.version === 5)!.statements[1]!
  const [backfillMs] = yield* timed(ch.command("bench", new Sql(backfill)))
  console.log(t(), `  migration 0005 backfill (processed_arrivals from events_processed): ${fmt(backfillMs / 1000, 1)} s, load ${os.loadavg()[0]!.toFixed(2)}`)

  const store = fromClient(ch)
  /** rows_read of a statement, run again with FORMAT JSON (the server's own count). */
  const rowsRead = (q: Sql) =>
    Effect.promise(() =>
      fetch(`${url.replace(/\/+$/, "")}/?database=${database}`, { method: "POST", body: `${q.text} FORMAT JSON` })
        .then((r) => r.json() as Promise<{ statistics: { rows_read: number } }>)
        .then((j) => j.statistics.rows_read)
    )
  const recorded: Array<Sql> = []
  const recording = fromClient({ ...ch, query: (op, q) => Effect.zipRight(Effect.sync(() => recorded.push(q)), ch.query(op, q)) })
  const meter = shape.meterIds[0]
  const probe = (label: string, afterMs: number, beforeMs: number, withBaseline: boolean) =>
    Effect.gen(function* () {
      const q = { scope, ingestedAfter: new Date(afterMs), ingestedBefore: new Date(beforeMs), windowMinutes: 60, meterIds: [meter] }
      const [ms, found] = yield* timed(store.windowsWithLateRows(q))
      recorded.length = 0
      yield* recording.windowsWithLateRows(q)
      const read = yield* rowsRead(recorded[0]!)
      let line = `${label}: product ${fmt(ms)} ms, ${found.length} windows, ${fmt(read)} rows read`
      if (withBaseline) {
        const b = baseline(scope, meter, afterMs, beforeMs, HOUR_MS)
        const [bms, brows] = yield* timed(ch.query("bench", b))
        const bread = yield* rowsRead(b)
        line += ` | before 0005: ${fmt(bms)} ms, ${brows.length} windows, ${fmt(bread)} rows read → ${fmt(bms / ms, 0)}×`
        if (brows.length !== found.length) line += " WINDOWS DIFFER"
      }
      console.log(t(), line, `(load ${os.loadavg()[0]!.toFixed(2)})`)
    })
  const due = (k: number) => start + k * HOUR_MS + 5 * 60_000 + 1000
  // hourly runs: rows ingested since the previous run (late ones are within 30 s of their hour)
  for (const k of [100, 400, 700]) yield* probe(`hourly run, hour ${k}`, due(k - 1), due(k), true)
  for (const k of [101, 250, 401, 550, 701]) yield* probe(`hourly run, hour ${k}`, due(k - 1), due(k), false)
  yield* probe("catch-up after 72 h (hours 480 → 552)", due(480), due(552), false)
  yield* probe("whole month (a first run; ingestedAfter = epoch)", 0, Date.now(), process.argv.includes("--baseline-month"))
  console.log(t(), `ingest spread ${INGEST_SPREAD_MS} ms; done, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`)
}).pipe(Effect.scoped)

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})

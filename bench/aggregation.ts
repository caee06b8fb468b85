/**
 * Aggregation query shape on PGlite / PostgreSQL (not a test: nothing is asserted about time).
 *
 *   npx tsx bench/aggregation.ts [postgres://…] [--events 60000] [--groups 5000] [--page 2000]
 *
 * One hour of processed rows (`--events` rows over `--groups` (customer, meter) groups, written
 * server-side with generate_series), read four ways in the same run, interleaved, medians of 5:
 * - the product: EventStore.aggregateBillable, the whole stream;
 * - keyset pages: the product's previous shape, `GROUP BY … ORDER BY … LIMIT page` with a
 *   row-value cursor, every page (the shape the product still uses when a window exceeds a page);
 * - one page: that shape's first page only;
 * - the engine's limit: a plain `GROUP BY` over the same rows and filters, no ORDER BY, no LIMIT.
 * Ratios are to the plain GROUP BY. Totals are checked equal across the four.
 */
import { SqlClient } from "@effect/sql"
import { Chunk, Effect, Stream } from "effect"
import * as Decimal from "../src/domain/Decimal.js"
import { asOwner, inTenant } from "../src/db/RowSecurity.js"
import { newId, TenantScope } from "../src/domain/Ids.js"
import { EventStore } from "../src/events/EventStore.js"
import { machine, startBenchApp } from "./harness.js"

const args = process.argv.slice(2)
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : fallback
}
const postgresUrl = args.find((a) => a.startsWith("postgres"))
const nEvents = flag("events", 60_000)
const nGroups = flag("groups", 5_000)
const pageSize = flag("page", 2_000)

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const main = async () => {
  const app = await startBenchApp(postgresUrl ? { postgresUrl } : {})
  try {
    const scope = TenantScope.make({ tenantId: newId.tenant(), environmentId: newId.environment() })
    const hour = new Date(Date.UTC(2026, 0, 1, 10))
    const end = new Date(hour.getTime() + 3_600_000)
    const meters = ["mtr_agg_a", "mtr_agg_b"]
    const customersPerMeter = Math.max(1, Math.floor(nGroups / meters.length))
    await app.runtime.runPromise(
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
            SELECT ${scope.tenantId}, ${scope.environmentId}, 'evt_' || i, ${meters[0]!},
                   'cus_' || ((i / 2) % ${customersPerMeter}), 'api_call',
                   ${hour}::timestamptz + ((i % 3600) || ' seconds')::interval, ${hour}::timestamptz, (i % 97) + 0.125, (i % 97) + 0.125
            FROM generate_series(0, ${Math.floor(nEvents / 2) - 1}) AS i`.pipe(
          Effect.zipRight(sql`INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
            SELECT ${scope.tenantId}, ${scope.environmentId}, 'evt_' || i, ${meters[1]!}, 'cus_' || (i % ${customersPerMeter}), 'api_call',
                   ${hour}::timestamptz + ((i % 3600) || ' seconds')::interval, ${hour}::timestamptz, (i % 89) + 0.5, (i % 89) + 0.5
            FROM generate_series(0, ${nEvents - Math.floor(nEvents / 2) - 1}) AS i`),
          Effect.zipRight(sql`ANALYZE events_processed`)
        )
      ).pipe(asOwner("bench: rows written server-side, as the table owner (row-level security, migration 0012)"))
    )
    const ingestedBefore = new Date(hour.getTime() + 7_200_000)
    const filter = (sql: SqlClient.SqlClient) =>
      sql`tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
          AND "timestamp" >= ${hour} AND "timestamp" < ${end} AND ingested_at <= ${ingestedBefore}
          AND qty_billable <> 0 AND meter_id IN ${sql.in(meters)}`
    type Row = { readonly customerId: string; readonly meterId: string; readonly eventName: string; readonly quantity: string }

    const product = Effect.flatMap(EventStore, (store) =>
      Stream.runCollect(
        store.aggregateBillable({ scope, windowStart: hour, windowEnd: end, ingestedBefore, meterIds: meters, pageSize })
      ).pipe(Effect.map((c) => Chunk.toReadonlyArray(c)))
    )
    const keysetPage = (sql: SqlClient.SqlClient, after: Row | undefined) =>
      sql<Row>`SELECT customer_id, meter_id, event_name, SUM(qty_billable)::text AS quantity FROM events_processed
               WHERE ${filter(sql)}
               ${after ? sql`AND (customer_id, meter_id, event_name) > (${after.customerId}, ${after.meterId}, ${after.eventName})` : sql``}
               GROUP BY customer_id, meter_id, event_name ORDER BY customer_id, meter_id, event_name LIMIT ${pageSize}`
    const keyset = Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.gen(function* () {
        const all: Array<Row> = []
        let after: Row | undefined
        for (;;) {
          const page = yield* keysetPage(sql, after)
          all.push(...page)
          if (page.length < pageSize) return all
          after = page[page.length - 1]
        }
      })
    )
    const onePage = Effect.flatMap(SqlClient.SqlClient, (sql) => keysetPage(sql, undefined))
    const plain = Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<Row>`SELECT customer_id, meter_id, event_name, SUM(qty_billable)::text AS quantity FROM events_processed
               WHERE ${filter(sql)} GROUP BY customer_id, meter_id, event_name`
    )
    // Every shape reads as the tenant, under the same row-level security policy the product reads under.
    const shapes = { product: inTenant(scope)(product), keyset: inTenant(scope)(keyset), "one page": inTenant(scope)(onePage), plain: inTenant(scope)(plain) } as const
    const times: Record<string, Array<number>> = {}
    const counts: Record<string, number> = {}
    const totals: Record<string, string> = {}
    for (let round = 0; round < 5; round++) {
      for (const [name, eff] of Object.entries(shapes)) {
        const t = performance.now()
        const rows = (await app.runtime.runPromise(eff as Effect.Effect<ReadonlyArray<Row>, unknown, never>)) as ReadonlyArray<Row>
        ;(times[name] ??= []).push(performance.now() - t)
        counts[name] = rows.length
        totals[name] = Decimal.sum(rows.map((r) => r.quantity))
      }
    }
    const limit = median(times["plain"]!)
    if (!["product", "keyset"].every((n) => totals[n] === totals["plain"])) throw new Error(`totals differ: ${JSON.stringify(totals)}`)
    console.log(`# aggregation shape on ${postgresUrl ? "PostgreSQL" : "PGlite"}, ${machine()}, ${new Date().toISOString()}`)
    console.log(`# ${nEvents} rows, ${counts["plain"]} groups, page ${pageSize}; medians of 5, interleaved`)
    for (const name of Object.keys(shapes)) {
      const m = median(times[name]!)
      console.log(`${name.padEnd(10)} ${m.toFixed(1).padStart(8)} ms  ${(m / limit).toFixed(2)}×  (${counts[name]} groups)`)
    }
  } finally {
    await app.dispose()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

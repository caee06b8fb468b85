/**
 * Bulk ingestion through the HTTP API beside the engine's own limit, interleaved in one run:
 * - product: 1,000-event bulk requests, 4 in flight, two meters matching every event (so 2
 *   processed rows per event), 1,000 customers;
 * - `unnest`: the same rows written straight through the service's own database client, one
 *   transaction per 1,000 events (events `INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING
 *   RETURNING` + processed rows `INSERT … unnest`), 4 in flight (`unnest ×4`) and 1 at a time
 *   (`unnest ×1`): no HTTP, JSON, validation or metering;
 * - `COPY` (PostgreSQL server only): the same rows COPYed straight into both tables (no dedup).
 * Each measure starts from a fresh database. Run: `npx tsx bench/ingest.ts [events] [rounds]`.
 * FLEXPRICE_BENCH_POSTGRES_URL adds PostgreSQL; FLEXPRICE_BENCH_CLICKHOUSE_URL a
 * PGlite+ClickHouse product run (no baseline).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import * as os from "node:os"
import { pathToFileURL } from "node:url"
import { copyIn, copyPayload, copyText } from "../src/db/PgCopy.js"
import { asOwner } from "../src/db/RowSecurity.js"
import { textArray } from "../src/db/SqlArrays.js"
import type { TenantScope } from "../src/domain/Ids.js"
import { CurrentTenant } from "../src/domain/Tenant.js"
import { machine, startBenchApp } from "./harness.js"

type Options = Parameters<typeof startBenchApp>[0]
const CUSTOMERS = 1000
const IN_FLIGHT = 4

const baseHour = () => {
  const hour = new Date(Date.now() - 3 * 3600_000)
  hour.setUTCMinutes(0, 0, 0)
  return hour
}
const rawEvent = (hour: Date, b: number, i: number) => ({
  event_id: `e-${b}-${i}`,
  event_name: "api_call",
  external_customer_id: `c${(b * 1000 + i) % CUSTOMERS}`,
  timestamp: new Date(hour.getTime() + ((b * 1000 + i) % 3_600_000)).toISOString(),
  properties: { tokens: `${(i % 97) + 0.25}` }
})

const inFlight = async (batches: number, run: (b: number) => Promise<number>, width = IN_FLIGHT) => {
  let next = 0
  let rows = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < batches) {
        const n = await run(next++)
        rows += n
      }
    })
  )
  return { rows, seconds: (performance.now() - t0) / 1000 }
}

const report = (label: string, events: number, seconds: number) => {
  const result = { label, events, seconds: Number(seconds.toFixed(2)), eventsPerSecond: Math.round(events / seconds) }
  console.log(JSON.stringify(result))
  return result
}

export const benchIngest = async (label: string, total: number, options: Options = {}) => {
  const app = await startBenchApp(options)
  const headers = { "x-api-key": app.apiKey, "content-type": "application/json" }
  const post = (p: string, body: unknown) => fetch(`${app.baseUrl}${p}`, { method: "POST", headers, body: JSON.stringify(body) })
  await post("/v1/meters", { name: "calls", event_name: "api_call", aggregation: { type: "COUNT" } })
  await post("/v1/meters", { name: "tokens", event_name: "api_call", aggregation: { type: "SUM", field: "tokens" } })
  for (let i = 0; i < CUSTOMERS; i += 1) await post("/v1/customers", { external_id: `c${i}` })
  const hour = baseHour()
  const bodies = Array.from({ length: total / 1000 }, (_, b) => JSON.stringify({ events: Array.from({ length: 1000 }, (_, i) => rawEvent(hour, b, i)) }))
  const { rows, seconds } = await inFlight(bodies.length, async (b) => {
    const res = await fetch(`${app.baseUrl}/v1/events/bulk`, { method: "POST", headers, body: bodies[b]! })
    if (res.status !== 202) throw new Error(`bulk failed: ${res.status} ${await res.text()}`)
    return ((await res.json()) as { accepted: number }).accepted
  })
  await app.dispose()
  return report(label, rows, seconds)
}

/** The rows the product writes for one bulk request, as the engine takes them. */
const batchRows = (scope: TenantScope, hour: Date, b: number) => {
  const ingestedAt = new Date().toISOString()
  const events = Array.from({ length: 1000 }, (_, i) => {
    const e = rawEvent(hour, b, i)
    return [scope.tenantId, scope.environmentId, e.event_id, e.event_name, e.external_customer_id, `cus_${e.external_customer_id}`,
      e.timestamp, ingestedAt, JSON.stringify(e.properties), "processed", null] as const
  })
  const processed = events.flatMap((e, i) =>
    ["mtr_calls", "mtr_tokens"].map((m) => [e[0], e[1], e[2], m, e[5], e[3], e[6], ingestedAt, m === "mtr_calls" ? "1" : `${(i % 97) + 0.25}`, m === "mtr_calls" ? "1" : `${(i % 97) + 0.25}`] as const)
  )
  return { events, processed }
}
const column = <T extends ReadonlyArray<string | null>>(rows: ReadonlyArray<T>, i: number) => textArray(rows.map((r) => r[i] ?? null))

/** The engine's limit on the service's own connection(s): `unnest` or `COPY` straight into the tables. */
export const benchBaseline = async (kind: "unnest" | "copy", label: string, total: number, options: Options = {}, width = IN_FLIGHT) => {
  const app = await startBenchApp(options)
  const scope = app.scope as TenantScope
  const hour = baseHour()
  const write = (b: number) =>
    Effect.gen(function* () {
      const sql = yield* PgClient.PgClient
      const { events, processed } = batchRows(scope, hour, b)
      return yield* sql.withTransaction(
        kind === "unnest"
          ? Effect.gen(function* () {
              const ids = yield* sql`INSERT INTO events
                (tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, "timestamp", ingested_at, properties, status, error)
                SELECT t.a, t.b, t.c, t.d, t.e, t.f, t.g, t.h, t.i::json, t.j, t.k
                FROM unnest(${column(events, 0)}::text[], ${column(events, 1)}::text[], ${column(events, 2)}::text[], ${column(events, 3)}::text[],
                  ${column(events, 4)}::text[], ${column(events, 5)}::text[], ${column(events, 6)}::timestamptz[], ${column(events, 7)}::timestamptz[],
                  ${column(events, 8)}::text[], ${column(events, 9)}::text[], ${column(events, 10)}::text[]) AS t(a, b, c, d, e, f, g, h, i, j, k)
                ON CONFLICT (tenant_id, environment_id, event_id) DO NOTHING RETURNING event_id`
              yield* sql`INSERT INTO events_processed
                (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
                SELECT * FROM unnest(${column(processed, 0)}::text[], ${column(processed, 1)}::text[], ${column(processed, 2)}::text[],
                  ${column(processed, 3)}::text[], ${column(processed, 4)}::text[], ${column(processed, 5)}::text[],
                  ${column(processed, 6)}::timestamptz[], ${column(processed, 7)}::timestamptz[], ${column(processed, 8)}::numeric[], ${column(processed, 9)}::numeric[])
                ON CONFLICT (tenant_id, environment_id, event_id, meter_id) DO NOTHING`
              return ids.length
            })
          : Effect.gen(function* () {
              const n = yield* copyIn(
                "events",
                ["tenant_id", "environment_id", "event_id", "event_name", "external_customer_id", "customer_id", '"timestamp"', "ingested_at", "properties", "status", "error"],
                copyPayload(events.map((r) => r.map((v) => copyText(v))))
              )
              yield* copyIn(
                "events_processed",
                ["tenant_id", "environment_id", "event_id", "meter_id", "customer_id", "event_name", '"timestamp"', "ingested_at", "qty_total", "qty_billable"],
                copyPayload(processed.map((r) => r.map((v) => copyText(v))))
              )
              return n
            })
      )
    }).pipe(
      // PostgreSQL refuses COPY FROM into a table under row-level security for a role the
      // policies apply to; the engine's limit is measured as the table owner.
      kind === "copy" ? asOwner("bench: raw COPY baseline") : Effect.provideService(CurrentTenant, scope)
    )
  const { rows, seconds } = await inFlight(total / 1000, (b) => app.runtime.runPromise(write(b)), width)
  await app.dispose()
  return report(label, rows, seconds)
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const total = Number(process.argv[2] ?? 60_000)
  const rounds = Number(process.argv[3] ?? 3)
  console.log(`# ingestion bench on ${machine()}; load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}; ${new Date().toISOString()}`)
  const backends: Array<{ name: string; options: Options; copy: boolean }> = [{ name: "pglite", options: {}, copy: false }]
  const pgUrl = process.env["FLEXPRICE_BENCH_POSTGRES_URL"]
  if (pgUrl) backends.push({ name: "postgres", options: { postgresUrl: pgUrl }, copy: true })
  for (const { name, options, copy } of backends) {
    const runs: Record<string, Array<number>> = { product: [], unnest: [], unnest1: [], copy: [] }
    for (let r = 0; r < rounds; r++) {
      // the order rotates so no measure always runs first (or last) in a round
      const measures: Array<[string, () => Promise<{ eventsPerSecond: number }>]> = [
        ["product", () => benchIngest(`${name} product`, total, options)],
        ["unnest", () => benchBaseline("unnest", `${name} unnest ×4`, total, options)],
        ["unnest1", () => benchBaseline("unnest", `${name} unnest ×1`, total, options, 1)],
        ...(copy ? [["copy", () => benchBaseline("copy", `${name} COPY`, total, options)] as [string, () => Promise<{ eventsPerSecond: number }>]] : [])
      ]
      for (let k = 0; k < measures.length; k++) {
        const [key, run] = measures[(k + r) % measures.length]!
        runs[key]!.push((await run()).eventsPerSecond)
      }
    }
    const product = median(runs["product"]!)
    const unnest = median(runs["unnest"]!)
    const unnest1 = median(runs["unnest1"]!)
    const summary: Record<string, unknown> = {
      backend: name, rounds, product, unnest4: unnest, unnest1,
      productVsUnnest4: Number((product / unnest).toFixed(2)), productVsUnnest1: Number((product / unnest1).toFixed(2))
    }
    if (copy) Object.assign(summary, { copy: median(runs["copy"]!), productVsCopy: Number((product / median(runs["copy"]!)).toFixed(2)) })
    console.log(`# medians ${JSON.stringify(summary)}; load average now ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`)
  }
  if (process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"]) await benchIngest("pglite+clickhouse product", total, { clickhouseUrl: process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"] })
}

/**
 * Bulk ingestion through the HTTP API: events/s with bulk requests of 1,000 events, 4 client
 * requests in flight, two meters matching every event. Run: `npx tsx bench/ingest.ts [events]`.
 * FLEXPRICE_BENCH_POSTGRES_URL adds a PostgreSQL run; FLEXPRICE_BENCH_CLICKHOUSE_URL a
 * PGlite+ClickHouse run.
 */
import { pathToFileURL } from "node:url"
import { machine, startBenchApp } from "./harness.js"

export const benchIngest = async (label: string, total: number, options: Parameters<typeof startBenchApp>[0] = {}) => {
  const app = await startBenchApp(options)
  const headers = { "x-api-key": app.apiKey, "content-type": "application/json" }
  const post = (p: string, body: unknown) => fetch(`${app.baseUrl}${p}`, { method: "POST", headers, body: JSON.stringify(body) })
  await post("/v1/meters", { name: "calls", event_name: "api_call", aggregation: { type: "COUNT" } })
  await post("/v1/meters", { name: "tokens", event_name: "api_call", aggregation: { type: "SUM", field: "tokens" } })
  const customers = 1000
  for (let i = 0; i < customers; i += 1) await post("/v1/customers", { external_id: `c${i}` })
  const hour = new Date(Date.now() - 3 * 3600_000)
  hour.setUTCMinutes(0, 0, 0)
  const bodies: Array<string> = []
  for (let b = 0; b < total / 1000; b++) {
    bodies.push(
      JSON.stringify({
        events: Array.from({ length: 1000 }, (_, i) => ({
          event_id: `e-${b}-${i}`,
          event_name: "api_call",
          external_customer_id: `c${(b * 1000 + i) % customers}`,
          timestamp: new Date(hour.getTime() + ((b * 1000 + i) % 3_600_000)).toISOString(),
          properties: { tokens: `${(i % 97) + 0.25}` }
        }))
      })
    )
  }
  let next = 0
  let accepted = 0
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < bodies.length) {
        const body = bodies[next++]!
        const res = await fetch(`${app.baseUrl}/v1/events/bulk`, { method: "POST", headers, body })
        if (res.status !== 202) throw new Error(`bulk failed: ${res.status} ${await res.text()}`)
        accepted += ((await res.json()) as { accepted: number }).accepted
      }
    })
  )
  const seconds = (performance.now() - t0) / 1000
  await app.dispose()
  const result = { label, events: accepted, seconds: Number(seconds.toFixed(2)), eventsPerSecond: Math.round(accepted / seconds) }
  console.log(JSON.stringify(result))
  return result
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const total = Number(process.argv[2] ?? 60_000)
  console.log(`# ingestion bench on ${machine()}`)
  await benchIngest("pglite", total)
  if (process.env["FLEXPRICE_BENCH_POSTGRES_URL"]) await benchIngest("postgres", total, { postgresUrl: process.env["FLEXPRICE_BENCH_POSTGRES_URL"] })
  if (process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"]) await benchIngest("pglite+clickhouse", total, { clickhouseUrl: process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"] })
}

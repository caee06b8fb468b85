/**
 * The statements one 1,000-event bulk request sends to the database (the round trips the
 * product makes per request, beside the `unnest` baseline's BEGIN + 2 INSERTs + COMMIT), counted
 * by wrapping `pg`'s Client.query in this process. Setup as bench/ingest.ts (1,000 customers,
 * two meters matching every event); one warm-up request, then 3 counted. Run:
 * `npx tsx bench/ingest-statements.ts` (PGlite) or with FLEXPRICE_BENCH_POSTGRES_URL.
 */
import { createRequire } from "node:module"

const pg = createRequire(import.meta.url)("pg") as { Client: { prototype: { query: (...args: Array<unknown>) => unknown } } }
const sent: Array<string> = []
let counting = false
const query = pg.Client.prototype.query
pg.Client.prototype.query = function (this: unknown, ...args: Array<unknown>) {
  const first = args[0] as string | { text?: string } | undefined
  const text = typeof first === "string" ? first : (first?.text ?? "(submittable)")
  if (counting) sent.push(text.replace(/\s+/g, " ").slice(0, 100))
  return query.apply(this, args)
}

const { startBenchApp } = await import("./harness.js")
const url = process.env["FLEXPRICE_BENCH_POSTGRES_URL"]
const app = await startBenchApp(url ? { postgresUrl: url } : {})
const headers = { "x-api-key": app.apiKey, "content-type": "application/json" }
const post = (p: string, body: string) => fetch(`${app.baseUrl}${p}`, { method: "POST", headers, body })
await post("/v1/meters", JSON.stringify({ name: "calls", event_name: "api_call", aggregation: { type: "COUNT" } }))
await post("/v1/meters", JSON.stringify({ name: "tokens", event_name: "api_call", aggregation: { type: "SUM", field: "tokens" } }))
for (let i = 0; i < 1000; i += 1) await post("/v1/customers", JSON.stringify({ external_id: `c${i}` }))
const hour = Date.now() - 3 * 3600_000
const bulk = (b: number) =>
  JSON.stringify({
    events: Array.from({ length: 1000 }, (_, i) => ({
      event_id: `e-${b}-${i}`,
      event_name: "api_call",
      external_customer_id: `c${i}`,
      timestamp: new Date(hour + i).toISOString(),
      properties: { tokens: `${(i % 97) + 0.25}` }
    }))
  })
await (await post("/v1/events/bulk", bulk(0))).text()
counting = true
for (let b = 1; b <= 3; b++) {
  const res = await post("/v1/events/bulk", bulk(b))
  if (res.status !== 202) throw new Error(`bulk failed: ${res.status} ${await res.text()}`)
  await res.text()
}
counting = false
console.log(`# ${url ? "postgres" : "pglite"}: ${sent.length / 3} statements per 1,000-event bulk request`)
for (const s of sent.slice(0, sent.length / 3)) console.log(s)
await app.dispose()

/**
 * Noisy neighbour (issue #15 item 4): how other requests fare while one tenant imports a 10 MB
 * CSV of 181,000 rows into the embedded service (one PGlite connection), then rolls it back.
 * Not a test: nothing is asserted about time.
 *
 *   npx tsx bench/csv-neighbour.ts [rows=181000] [postgresUrl] [--no-rollback] [--max-seconds=N]
 *
 * `--preload=N` first gives the importing tenant N customers, each mapped (external ids outside
 * the file's), and refreshes planner statistics as an import does: the import then meets what
 * the last chunks of a 10 MB import meet, so a chunk cost that grows with the tenant's rows shows
 * in minutes instead of hours.
 *
 * `--max-seconds=N` stops waiting for the import after N seconds and reports the rows it had done
 * (a build whose import grows superlinear would otherwise run for hours); no rollback then.
 *
 * One run measures, in this order: the idle service (baseline), the import, the rollback. During
 * each phase two probes run side by side, each one request at a time with 20 ms pauses:
 * `GET /healthz` and another tenant's `GET /v1/customers?limit=10` (a database read). Reported:
 * p50 / p99 / max latency per probe and phase, requests that failed, the import's wall time, and
 * the process's peak RSS (sampled every 100 ms). The import is the API's: answered 202 and polled
 * at its status URL (a server that answers the upload synchronously is measured as it answers).
 */
import { Effect } from "effect"
import * as os from "node:os"
import { pathToFileURL } from "node:url"
import { PgClient } from "@effect/sql-pg"
import { asOwner } from "../src/db/RowSecurity.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"
import { machine, startBenchApp, type BenchApp } from "./harness.js"

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
const pad = (n: number, w: number) => String(n).padStart(w, "0")

/** `external_id,stripe_customer_id,name,email`, ≈ 59 bytes a row. */
export const benchCsv = (rows: number) => {
  const lines = ["external_id,stripe_customer_id,name,email"]
  for (let i = 0; i < rows; i++) lines.push(`ext-${pad(i, 7)},cus_N${pad(i, 7)},Customer ${pad(i, 7)},c${pad(i, 7)}@ex.com`)
  return lines.join("\n") + "\n"
}

const percentile = (sorted: ReadonlyArray<number>, p: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!)

interface Probe {
  readonly stop: () => Promise<{ readonly n: number; readonly failed: number; readonly p50: number; readonly p99: number; readonly max: number }>
}

const probe = (url: string, headers: Record<string, string>): Probe => {
  const times: Array<number> = []
  let failed = 0
  let running = true
  const loop = (async () => {
    while (running) {
      const t0 = performance.now()
      try {
        const res = await fetch(url, { headers, signal: AbortSignal.timeout(60_000) })
        await res.arrayBuffer()
        if (!res.ok) failed++
      } catch {
        failed++
      }
      times.push(performance.now() - t0)
      await new Promise((r) => setTimeout(r, 20))
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      const sorted = [...times].sort((a, b) => a - b)
      return { n: sorted.length, failed, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN }
    }
  }
}

const rssSampler = () => {
  let peak = process.memoryUsage().rss
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100)
  return { stop: () => (clearInterval(timer), peak) }
}

/** A job status body's `progress.rows_done` (0 when absent). */
const rowsDone = (body: Record<string, unknown>): number => {
  const progress = body["progress"]
  return typeof progress === "object" && progress !== null ? Number((progress as Record<string, unknown>)["rows_done"] ?? 0) : 0
}

/**
 * Poll a job's status URL until it ends (or `deadline`); with `progress`, report the rows done
 * every `every` ms — a cost that grows with the rows before a chunk shows as a falling rate.
 */
const poll = async (url: string, apiKey: string, options: { deadline?: number; progress?: (line: string) => void; every?: number } = {}) => {
  const t0 = performance.now()
  let mark = { at: t0, done: 0 }
  for (;;) {
    const body = (await (await fetch(url, { headers: { "x-api-key": apiKey } })).json()) as Record<string, unknown>
    if (body["status"] !== "running" || performance.now() > (options.deadline ?? Number.POSITIVE_INFINITY)) return body
    const now = performance.now()
    if (options.progress && now - mark.at >= (options.every ?? 60_000)) {
      const done = rowsDone(body)
      options.progress(`  at ${fmt((now - t0) / 1000)} s: ${fmt(done)} rows done, ${fmt(((done - mark.done) * 1000) / (now - mark.at))} rows/s since ${fmt((mark.at - t0) / 1000)} s`)
      mark = { at: now, done }
    }
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** Run `work` with both probes on; the phase's figures. */
const phase = async <A>(app: BenchApp, neighbourKey: string, work: () => Promise<A>) => {
  const health = probe(`${app.baseUrl}/healthz`, {})
  const reads = probe(`${app.baseUrl}/v1/customers?limit=10`, { "x-api-key": neighbourKey })
  const rss = rssSampler()
  const t0 = performance.now()
  const result = await work()
  const seconds = (performance.now() - t0) / 1000
  return { result, seconds, health: await health.stop(), reads: await reads.stop(), peakRss: rss.stop() }
}

const line = (name: string, p: Awaited<ReturnType<typeof phase>>) => {
  const probeText = (label: string, s: Awaited<ReturnType<Probe["stop"]>>) =>
    `${label} p50 ${fmt(s.p50, 1)} ms, p99 ${fmt(s.p99, 1)} ms, max ${fmt(s.max, 1)} ms (${s.n} requests, ${s.failed} failed)`
  return `${name}: ${fmt(p.seconds, 1)} s; ${probeText("/healthz", p.health)}; ${probeText("neighbour reads", p.reads)}; peak RSS ${fmt(p.peakRss / 2 ** 20)} MiB`
}

export const benchCsvNeighbour = async (
  options: { readonly rows?: number; readonly postgresUrl?: string; readonly rollback?: boolean; readonly print?: boolean; readonly maxSeconds?: number; readonly preload?: number } = {}
) => {
  const rows = options.rows ?? 181_000
  const csv = benchCsv(rows)
  const app = await startBenchApp({
    ...(options.postgresUrl ? { postgresUrl: options.postgresUrl } : {}),
    env: { FLEXPRICE_MIGRATION_CSV_MAX_BYTES: String(16 * 2 ** 20), FLEXPRICE_LOG_LEVEL: "Error" }
  })
  const out: Array<string> = []
  const emit = (l: string) => {
    out.push(l)
    if (options.print) console.log(l)
  }
  try {
    const neighbour = await app.runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create(`neighbour-${Date.now()}`, "bench")))
    if (options.preload !== undefined && options.preload > 0) {
      const t0 = performance.now()
      const { tenantId, environmentId } = app.scope
      await app.runtime.runPromise(
        asOwner("bench preload")(
          Effect.flatMap(PgClient.PgClient, (sql) =>
            Effect.all([
              sql`INSERT INTO customers (id, tenant_id, environment_id, external_id, name, email)
                SELECT 'cust_pre' || i, ${tenantId}, ${environmentId}, 'pre-' || lpad(i::text, 7, '0'), 'Preloaded', 'p@ex.com' FROM generate_series(1, ${options.preload}) i`,
              sql`INSERT INTO customer_integration_mappings (id, tenant_id, environment_id, customer_id, provider_type, provider_customer_id, status, source)
                SELECT 'map_pre' || i, ${tenantId}, ${environmentId}, 'cust_pre' || i, 'stripe', 'cus_P' || lpad(i::text, 7, '0'), 'active', 'api' FROM generate_series(1, ${options.preload}) i`,
              sql`ANALYZE customers, customer_integration_mappings`
            ])
          )
        )
      )
      emit(`preloaded the importing tenant with ${fmt(options.preload)} mapped customers in ${fmt((performance.now() - t0) / 1000, 1)} s`)
    }
    emit(`file: ${fmt(rows)} rows, ${fmt(Buffer.byteLength(csv) / 1e6, 1)} MB; backend ${options.postgresUrl ? "PostgreSQL" : "PGlite (embedded)"}; RSS at start ${fmt(process.memoryUsage().rss / 2 ** 20)} MiB`)
    emit(line("idle (5 s)", await phase(app, neighbour.apiKey, () => new Promise((r) => setTimeout(r, 5000)))))
    let migrationId = ""
    const imported = await phase(app, neighbour.apiKey, async () => {
      const res = await fetch(`${app.baseUrl}/v1/stripe/migrate/customers/csv`, {
        method: "POST",
        headers: { "x-api-key": app.apiKey, "content-type": "text/csv" },
        body: csv
      })
      const body = (await res.json()) as Record<string, unknown>
      migrationId = String(body["migration_id"])
      const deadline = options.maxSeconds === undefined ? undefined : performance.now() + options.maxSeconds * 1000
      if (res.status === 202) return poll(`${app.baseUrl}${body["status_url"]}`, app.apiKey, { ...(deadline !== undefined ? { deadline } : {}), progress: emit })
      return body
    })
    const r = imported.result as Record<string, unknown>
    const done = r["status"] === "running" ? rowsDone(r) : rows
    emit(
      line(
        r["status"] === "running"
          ? `import (STILL RUNNING after ${fmt(imported.seconds)} s: ${fmt(done)} of ${fmt(rows)} rows, ${fmt(done / imported.seconds)} rows/s)`
          : `import (${r["status"]}, ${fmt(rows / imported.seconds)} rows/s)`,
        imported
      )
    )
    if (options.rollback !== false && r["status"] !== "running") {
      const rolled = await phase(app, neighbour.apiKey, async () => {
        const res = await fetch(`${app.baseUrl}/v1/stripe/migrate/${migrationId}/rollback`, { method: "POST", headers: { "x-api-key": app.apiKey } })
        const body = (await res.json()) as Record<string, unknown>
        if (res.status === 202) return poll(`${app.baseUrl}${body["status_url"]}`, app.apiKey)
        return body
      })
      emit(line(`rollback (${(rolled.result as Record<string, unknown>)["status"]}, ${fmt(rows / rolled.seconds)} rows/s)`, rolled))
    }
  } finally {
    await app.dispose()
  }
  return out
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2)
  const positional = args.filter((a) => !a.startsWith("--"))
  const rows = Number(positional[0] ?? "181000")
  const postgresUrl = positional[1]
  console.log(`machine: ${machine()}; load average at the start ${os.loadavg().map((l) => l.toFixed(1)).join(" / ")}; ${new Date().toISOString()}`)
  const maxSeconds = args.find((a) => a.startsWith("--max-seconds="))?.split("=")[1]
  const preload = args.find((a) => a.startsWith("--preload="))?.split("=")[1]
  benchCsvNeighbour({
    rows,
    ...(postgresUrl ? { postgresUrl } : {}),
    ...(maxSeconds ? { maxSeconds: Number(maxSeconds) } : {}),
    ...(preload ? { preload: Number(preload) } : {}),
    rollback: !args.includes("--no-rollback"),
    print: true
  }).then(
    () => console.log(`load average at the end ${os.loadavg().map((l) => l.toFixed(1)).join(" / ")}`),
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}

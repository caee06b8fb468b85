/**
 * Replicas benchmark (issue #16 item 6, not a test): N `flexprice serve` processes against one
 * PostgreSQL database and one Stripe emulator, their built-in schedulers syncing every tenant of
 * one closed hour. For each N in --replicas (default 1,2,4), on a fresh database and emulator:
 *
 *   npx tsx bench/replicas.ts --postgres postgres://postgres@127.0.0.1:5432/postgres
 *   npx tsx bench/replicas.ts --postgres URL --tenants 200 --customers 500 --replicas 1,2,4
 *   npx tsx bench/replicas.ts --postgres URL --interval 5 --events 3
 *
 * Each tenant has `customers` customers × 2 meters (COUNT and SUM), `events` processed events per
 * (customer, meter), so one aggregate each. The tenants' sync is switched on in one statement once
 * every replica answers /healthz (t0); the bench polls the ledger until every aggregate is synced,
 * lets the schedulers run `--settle` more seconds, and reports:
 *
 * - aggregates synced per second (all aggregates ÷ (last synced_at − t0));
 * - Stripe calls by endpoint (emulator counters), and calls made after everything was synced;
 * - lease acquisitions and hand-overs (a trigger on `sync_leases`, installed by the bench in its
 *   own schema, logs every new fencing token; a hand-over is a tenant's lease passing to another
 *   process), and runs per replica by outcome (`flexprice_sync_runs_total` from each /metrics);
 * - no aggregate synced twice: the ledger holds one synced batch per (tenant, customer, meter,
 *   window); the emulator accepted exactly one event per aggregate and ignored no duplicate
 *   identifier; its totals equal a BigInt oracle over the generated events;
 * - fairness: per tenant, the lag from t0 to its last synced batch (median, p90, slowest);
 * - CPU seconds of each replica (from /proc), and load average before and after.
 *
 * The machine's cores are shared by the replicas, PostgreSQL, the emulator and this process, so
 * more replicas contend for the same CPU; BENCHMARKS.md says what that means for the figures.
 */
import { randomBytes } from "node:crypto"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as O from "../test/support/oracle.js"
import { callsSince, startEmulator } from "./emulatorTarget.js"
import { machine } from "./harness.js"
import { pg, setupDatabase, type Shape } from "./replicasSetup.js"

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
const postgresUrl = arg("postgres") ?? process.env["FLEXPRICE_BENCH_POSTGRES_URL"]
const shape: Shape = { tenants: Number(arg("tenants") ?? 200), customers: Number(arg("customers") ?? 500), events: Number(arg("events") ?? 2) }
const replicaCounts = (arg("replicas") ?? "1,2,4").split(",").map(Number)
const INTERVAL = Number(arg("interval") ?? 5)
const SETTLE_S = Number(arg("settle") ?? 2 * INTERVAL + 2)
const TIMEOUT_S = Number(arg("timeout") ?? 1800)
const KEY = "sk_test_51FlexpriceBench00000000SECRET4242"
const ROOT = path.resolve(import.meta.dirname, "..")
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const log = (line: string) => console.log(new Date().toISOString().slice(11, 19), line)
const load = () => os.loadavg().map((l) => l.toFixed(1)).join(" ")

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const srv = net.createServer()
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
    srv.on("error", reject)
  })

/** user + system CPU seconds of a process (Linux /proc; 0 elsewhere) */
const cpuSeconds = (pid: number) => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

const adminQuery = async (url: string, statement: string) => {
  const client = new pg.Pool({ connectionString: url, max: 1 })
  try {
    await client.query(statement)
  } finally {
    await client.end()
  }
}

const quantile = (sorted: ReadonlyArray<number>, q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN

interface Replica {
  readonly child: ChildProcess
  readonly port: number
  output: string
}

const startReplica = async (env: Record<string, string>): Promise<Replica> => {
  const port = await freePort()
  const child = spawn(process.execPath, ["--import", "tsx", "src/bin/flexprice.ts", "serve"], {
    cwd: ROOT,
    env: { ...process.env, ...env, FLEXPRICE_HTTP_ADDR: `127.0.0.1:${port}` },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"]
  })
  const replica: Replica = { child, port, output: "" }
  const keep = (d: Buffer) => (replica.output = (replica.output + d.toString()).slice(-8000))
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  return replica
}

const awaitHealthy = async (r: Replica) => {
  for (let i = 0; i < 1200; i++) {
    if (r.child.exitCode !== null) break
    if (await fetch(`http://127.0.0.1:${r.port}/healthz`).then((x) => x.ok, () => false)) return
    await sleep(250)
  }
  throw new Error(`replica on :${r.port} did not start:\n${r.output}`)
}

const stopReplica = async (r: Replica) => {
  if (r.child.exitCode !== null || r.child.signalCode !== null) return
  const exited = new Promise((res) => r.child.once("exit", res))
  process.kill(-r.child.pid!, "SIGTERM")
  const timer = setTimeout(() => r.child.exitCode === null && process.kill(-r.child.pid!, "SIGKILL"), 15_000)
  await exited
  clearTimeout(timer)
}

const runsByOutcome = async (r: Replica) => {
  const text = await fetch(`http://127.0.0.1:${r.port}/metrics`).then((x) => x.text(), () => "")
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^flexprice_sync_runs_total\{[^}]*status="([^"]+)"[^}]*\} (\S+)/gm)) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2])
  return out
}

const LEASE_LOG = `
  CREATE SCHEMA bench;
  CREATE TABLE bench.lease_log (tenant text NOT NULL, owner text NOT NULL, token bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
  CREATE FUNCTION bench.log_lease() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
  BEGIN
    IF TG_OP = 'INSERT' OR NEW.token IS DISTINCT FROM OLD.token THEN
      INSERT INTO bench.lease_log (tenant, owner, token) VALUES (NEW.tenant_id, NEW.owner, NEW.token);
    END IF;
    RETURN NEW;
  END $$;
  CREATE TRIGGER bench_lease_log AFTER INSERT OR UPDATE ON public.sync_leases FOR EACH ROW EXECUTE FUNCTION bench.log_lease();`

const runOnce = async (replicas: number, baseUrl: string) => {
  const dbName = `replicas_bench_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`
  await adminQuery(baseUrl, `CREATE DATABASE ${dbName}`)
  const u = new URL(baseUrl)
  u.pathname = `/${dbName}`
  const databaseUrl = u.toString()
  const emulator = await startEmulator("child", KEY)
  const running: Array<Replica> = []
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 })
  try {
    const env: Record<string, string> = {
      FLEXPRICE_DATABASE_URL: databaseUrl,
      FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}`,
      STRIPE_API_BASE: emulator.url,
      STRIPE_METER_EVENTS_API_BASE: emulator.url,
      // the emulator's rate limits are off (bench); the client's own limiters must not bind either
      STRIPE_RATE_LIMIT_TEST_PER_SECOND: "10000",
      STRIPE_METER_STREAM_RATE_LIMIT_PER_SECOND: "10000",
      FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
      FLEXPRICE_SCHEDULE_ENABLED: "true",
      FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: String(INTERVAL),
      FLEXPRICE_LOG_LEVEL: "Warning",
      OTEL_SDK_DISABLED: "true"
    }
    const t0Setup = performance.now()
    const setup = await setupDatabase({ databaseUrl, env, emulator, apiKey: KEY, shape, log })
    await pool.query(LEASE_LOG)
    log(`setup done in ${((performance.now() - t0Setup) / 1000).toFixed(1)} s; starting ${replicas} replica(s)`)

    for (let i = 0; i < replicas; i++) running.push(await startReplica(env))
    await Promise.all(running.map(awaitHealthy))
    const cpu0 = running.map((r) => cpuSeconds(r.child.pid!))
    const calls0 = await emulator.calls()
    const load0 = load()
    const t0 = Date.now()
    await pool.query("UPDATE stripe_tenant_configs SET sync_enabled = true")
    log(`all ${replicas} replica(s) healthy; sync enabled for ${shape.tenants} tenants (load ${load0})`)

    let synced = 0
    for (let lastLog = 0; synced < setup.aggregates; ) {
      await sleep(500)
      synced = Number((await pool.query("SELECT count(*)::int AS n FROM stripe_sync_batches WHERE sync_status = 'synced'")).rows[0].n)
      const elapsed = (Date.now() - t0) / 1000
      if (elapsed - lastLog >= 15) {
        lastLog = elapsed
        log(`  ${synced} / ${setup.aggregates} synced after ${elapsed.toFixed(0)} s`)
      }
      if (elapsed > TIMEOUT_S) throw new Error(`timeout: ${synced} of ${setup.aggregates} synced after ${TIMEOUT_S} s`)
      for (const r of running) if (r.child.exitCode !== null) throw new Error(`a replica exited:\n${r.output}`)
    }
    const doneAt = Date.now()
    const callsDone = await emulator.calls()
    const cpuDone = running.map((r, i) => cpuSeconds(r.child.pid!) - cpu0[i]!)
    await sleep(SETTLE_S * 1000)
    const callsSettled = await emulator.calls()

    // ---- exactly once
    const dupLedger = Number(
      (await pool.query(`SELECT count(*)::int AS n FROM (SELECT 1 FROM stripe_sync_batches WHERE sync_status <> 'skipped'
        GROUP BY tenant_id, environment_id, customer_id, meter_id, window_start HAVING count(*) > 1) d`)).rows[0].n
    )
    const notSynced = Number((await pool.query("SELECT count(*)::int AS n FROM stripe_sync_batches WHERE sync_status <> 'synced'")).rows[0].n)
    const inspect = (await fetch(`${emulator.url}/_emulator/meter_events`).then((r) => r.json())) as {
      totals: Array<{ customer: string; event_name: string; sum: string; count: number }>
      events_accepted: number
      duplicates_ignored: number
    }
    let mismatched = 0
    let countNotOne = 0
    const got = new Map(inspect.totals.map((t) => [`${t.customer}\u0000${t.event_name}`, t]))
    for (const [k, want] of setup.expected) {
      const t = got.get(k)
      if (t === undefined || O.compare(t.sum, want) !== 0) mismatched++
      if (t?.count !== 1) countNotOne++
    }
    const unexpected = inspect.totals.length - setup.expected.size

    // ---- fairness: per tenant, t0 → its last synced batch
    const lags = (
      await pool.query(`SELECT tenant_id, EXTRACT(EPOCH FROM max(synced_at))::float8 * 1000 AS last_ms,
          EXTRACT(EPOCH FROM min(synced_at))::float8 * 1000 AS first_ms FROM stripe_sync_batches GROUP BY tenant_id`)
    ).rows.map((r) => ({ tenant: String(r["tenant_id"]), lastS: (Number(r["last_ms"]) - t0) / 1000, firstS: (Number(r["first_ms"]) - t0) / 1000 }))
    const lastSorted = lags.map((l) => l.lastS).sort((a, b) => a - b)
    const lastSyncedS = lastSorted[lastSorted.length - 1] ?? NaN
    const slowest = lags.reduce((a, b) => (b.lastS > a.lastS ? b : a), lags[0]!)

    // ---- leases: acquisitions by process, hand-overs between processes
    const leaseRows = (
      await pool.query("SELECT tenant, owner, token::text AS token, EXTRACT(EPOCH FROM at)::float8 * 1000 AS at_ms FROM bench.lease_log ORDER BY tenant, token")
    ).rows as Array<{ tenant: string; owner: string; token: string; at_ms: number }>
    const proc = (owner: string) => owner.split(":").slice(0, -1).join(":")
    let handovers = 0
    let handoversBeforeDone = 0
    let acquisitionsBeforeDone = 0
    const byProcess = new Map<string, number>()
    const tenantsByProcess = new Map<string, Set<string>>()
    for (const [i, row] of leaseRows.entries()) {
      byProcess.set(proc(row.owner), (byProcess.get(proc(row.owner)) ?? 0) + 1)
      tenantsByProcess.set(proc(row.owner), (tenantsByProcess.get(proc(row.owner)) ?? new Set()).add(row.tenant))
      const prev = leaseRows[i - 1]
      const before = Number(row.at_ms) <= doneAt
      if (before) acquisitionsBeforeDone++
      if (prev !== undefined && prev.tenant === row.tenant && proc(prev.owner) !== proc(row.owner)) {
        handovers++
        if (before) handoversBeforeDone++
      }
    }
    const runs = await Promise.all(running.map(runsByOutcome))
    const duringCalls = callsSince(calls0, callsDone)
    const afterCalls = callsSince(callsDone, callsSettled)
    const wallS = (doneAt - t0) / 1000

    console.log(`\n### ${replicas} replica(s): ${shape.tenants} tenants × ${shape.customers} customers × 2 meters = ${setup.aggregates} aggregates (${shape.events} events each)`)
    console.log(`all synced: ${lastSyncedS.toFixed(1)} s after t0 (poll saw it at ${wallS.toFixed(1)} s) = ${(setup.aggregates / lastSyncedS).toFixed(0)} aggregates/s`)
    console.log(`Stripe calls until all synced: ${duringCalls.total} ${JSON.stringify(duringCalls.byEndpoint)}; in the ${SETTLE_S} s after: ${afterCalls.total} ${JSON.stringify(afterCalls.byEndpoint)}`)
    console.log(
      `exactly once: ledger (tenant, customer, meter, window) with > 1 batch: ${dupLedger}; batches not synced: ${notSynced}; ` +
        `emulator accepted ${inspect.events_accepted} events for ${setup.aggregates} aggregates, duplicates ignored ${inspect.duplicates_ignored}, ` +
        `(customer, meter) totals ≠ oracle: ${mismatched}, count ≠ 1: ${countNotOne}, unexpected: ${unexpected}`
    )
    console.log(
      `fairness (t0 → tenant's last batch synced): median ${quantile(lastSorted, 0.5).toFixed(1)} s, p90 ${quantile(lastSorted, 0.9).toFixed(1)} s, ` +
        `slowest ${slowest.lastS.toFixed(1)} s (${setup.tenantLabel.get(slowest.tenant)}, first batch at ${slowest.firstS.toFixed(1)} s)`
    )
    console.log(
      `leases: ${leaseRows.length} acquisitions, ${handovers} hand-overs between processes (until all synced: ${acquisitionsBeforeDone}, ${handoversBeforeDone}); tenants per process: ` +
        [...tenantsByProcess.values()].map((s) => s.size).join(", ") + `; acquisitions per process: ${[...byProcess.values()].join(", ")}`
    )
    console.log(`runs per replica (flexprice_sync_runs_total by status): ${runs.map((r) => JSON.stringify(r)).join("; ")}`)
    console.log(`CPU s per replica until all synced: ${cpuDone.map((c) => c.toFixed(1)).join(", ")} (wall ${wallS.toFixed(1)} s); load ${load0} → ${load()}`)
    const ok = dupLedger === 0 && notSynced === 0 && mismatched === 0 && countNotOne === 0 && unexpected === 0 && inspect.duplicates_ignored === 0
    if (!ok) console.log("EXACTLY-ONCE CHECK FAILED")
    return ok
  } finally {
    for (const r of running) await stopReplica(r).catch(() => undefined)
    await pool.end().catch(() => undefined)
    await emulator.close().catch(() => undefined)
    await adminQuery(baseUrl, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => undefined)
  }
}

const main = async () => {
  if (postgresUrl === undefined) throw new Error("bench/replicas.ts needs --postgres URL (or FLEXPRICE_BENCH_POSTGRES_URL)")
  console.log(`# replicas bench on ${machine()}, ${new Date().toISOString()}, load ${load()}; schedule interval ${INTERVAL} s`)
  let failed = 0
  for (const n of replicaCounts) if (!(await runOnce(n, postgresUrl))) failed++
  process.exit(failed > 0 ? 1 : 0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

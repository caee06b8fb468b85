/**
 * `npm run bench`: every benchmark in turn, each as its own process (they measure throughput,
 * so they must not share a CPU with each other). Results go to stdout; copy them into
 * BENCHMARKS.md with the machine line. Set FLEXPRICE_BENCH_POSTGRES_URL /
 * FLEXPRICE_BENCH_CLICKHOUSE_URL to include those backends.
 */
import { spawnSync } from "node:child_process"
import { machine } from "./harness.js"

const runs: Array<{ readonly name: string; readonly args: ReadonlyArray<string> }> = [
  { name: "ingestion through the HTTP API", args: ["bench/ingest.ts", "60000"] },
  { name: "Stripe emulator on loopback", args: ["bench/emulator.ts"] },
  { name: "StripeClient against the emulator", args: ["bench/stripe.ts"] },
  { name: "webhook latency", args: ["bench/webhooks.ts", "--n", "500"] },
  { name: "sync of 100,000 aggregates", args: ["bench/sync.ts"] },
  { name: "noisy neighbour: 10 MB CSV import and rollback", args: ["bench/csv-neighbour.ts"] },
  { name: "Stripe customer migration", args: ["bench/migration.ts", "2500", ...(process.env["FLEXPRICE_BENCH_POSTGRES_URL"] ? [process.env["FLEXPRICE_BENCH_POSTGRES_URL"]] : [])] },
  ...(process.env["FLEXPRICE_BENCH_POSTGRES_URL"]
    ? [{ name: "serve replicas on one PostgreSQL (1, 2, 4)", args: ["bench/replicas.ts", "--postgres", process.env["FLEXPRICE_BENCH_POSTGRES_URL"], "--tenants", "50"] }]
    : []),
  ...(process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"]
    ? [{ name: "ClickHouse event store", args: ["bench/clickhouse.ts", process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"]] }]
    : []),
  { name: "a month of 2.5M events, 720 hourly windows (PGlite)", args: ["bench/month.ts", "--events", "2500000"] },
  ...(process.env["FLEXPRICE_BENCH_POSTGRES_URL"]
    ? [{ name: "a month of 2.5M events, 720 hourly windows (PostgreSQL)", args: ["bench/month.ts", "--events", "2500000", "--postgres", process.env["FLEXPRICE_BENCH_POSTGRES_URL"]] }]
    : []),
  ...(process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"]
    ? [
        {
          name: "a month of 25M events, 720 hourly windows (ClickHouse)",
          args: [
            "bench/month.ts",
            "--events",
            "25000000",
            "--clickhouse",
            process.env["FLEXPRICE_BENCH_CLICKHOUSE_URL"],
            ...(process.env["FLEXPRICE_BENCH_POSTGRES_URL"] ? ["--postgres", process.env["FLEXPRICE_BENCH_POSTGRES_URL"]] : [])
          ]
        }
      ]
    : [])
]

console.log(`# benchmarks on ${machine()}, ${new Date().toISOString()}`)
let failed = 0
for (const run of runs) {
  console.log(`\n## ${run.name}: npx tsx ${run.args.join(" ")}`)
  const result = spawnSync(process.execPath, ["--import", "tsx", ...run.args], { stdio: "inherit" })
  if (result.status !== 0) {
    failed++
    console.log(`(exit ${result.status})`)
  }
}
process.exit(failed > 0 ? 1 : 0)

/**
 * The demo's code path with small N: the real service, webhooks, ingestion, syncs under injected
 * faults, the schedule and the reconciliation. Expected totals are summed here with the BigInt
 * oracle over the generator's raw events (same seed) — not its Totals, not the demo's own
 * bookkeeping — and compared with what the report says our ledger holds and what the emulator
 * received.
 */
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { formatReport, generateUsage, runDemo, type DemoReport } from "../../src/demo/index.js"
import type { UsageEvent } from "../../src/demo/Generator.js"
import { forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"
import * as O from "../support/oracle.js"

const CUSTOMERS = 30
const EVENTS = 3000
const LATE = 90
const SEED = 4242

const expectedTotals = () => {
  const customers = [
    ...Array.from({ length: CUSTOMERS }, (_, i) => `customer-${String(i + 1).padStart(4, "0")}`),
    ...Array.from({ length: 3 }, (_, i) => `no-stripe-${i + 1}`)
  ]
  const mapped = new Set(customers.slice(0, CUSTOMERS))
  const unmapped = new Set(customers.slice(CUSTOMERS))
  // the hour does not change quantities: any start gives the same totals
  const main = generateUsage({ seed: SEED, count: EVENTS, customers, hourStart: 0, idPrefix: "x" })
  const late = generateUsage({ seed: SEED + 1, count: LATE, customers, hourStart: 0, idPrefix: "y" })
  return { all: oracleTotals([...main.events, ...late.events]), mapped, unmapped, lateTotals: oracleTotals(late.events) }
}

/** Exact per-(customer, meter) sums of raw generated events: COUNT meters count 1 an event. */
const oracleTotals = (events: ReadonlyArray<UsageEvent>) => {
  const sums = new Map<string, { externalId: string; meter: string; total: O.Exact }>()
  for (const e of events) {
    const k = `${e.external_customer_id}\u0000${e.event_name}`
    const q = e.event_name === "api_calls" ? "1" : e.properties!["tokens"]!
    const prev = sums.get(k)
    sums.set(k, { externalId: e.external_customer_id, meter: e.event_name, total: O.add(prev?.total ?? "0", q) })
  }
  return {
    meterTotal: (meter: string, customers?: ReadonlySet<string>) =>
      O.format(O.sum([...sums.values()].filter((p) => p.meter === meter && (customers === undefined || customers.has(p.externalId))).map((p) => p.total))),
    pairs: () => [...sums.values()]
  }
}

const assertReport = (report: DemoReport) => {
  expect(report.failures).toEqual([])
  expect(report.ok).toBe(true)
  const { all, mapped, unmapped, lateTotals } = expectedTotals()
  expect(report.meters.map((m) => m.meter)).toEqual(["api_calls", "tokens"])
  for (const m of report.meters) {
    const everything = all.meterTotal(m.meter)
    const billable = all.meterTotal(m.meter, mapped)
    const held = all.meterTotal(m.meter, unmapped)
    expect(O.compare(billable, "0")).toBe(1)
    expect(O.compare(held, "0")).toBe(1)
    // generator = our ledger = Stripe, exactly
    expect(m.expectedAll).toBe(everything)
    expect(m.ledgerTotal).toBe(everything)
    expect(m.ledgerSynced).toBe(billable)
    expect(m.stripeReceived).toBe(billable)
    expect(m.skippedQuantity).toBe(held)
    expect(m.batchesFailed).toBe(0)
    expect(m.batchesPending).toBe(0)
    // the late events became delta batches (sequence > 1) wherever a mapped pair got late usage
    const latePairs = lateTotals.pairs().filter((p) => p.meter === m.meter && mapped.has(p.externalId)).length
    expect(m.lateDeltas).toBeGreaterThanOrEqual(latePairs)
  }
  expect(report.meters.find((m) => m.meter === "api_calls")!.events + report.meters.find((m) => m.meter === "tokens")!.events).toBe(EVENTS + LATE)
  expect(report.pairs).toEqual({ checked: CUSTOMERS * 2, mismatched: 0 })
  expect(report.ingest).toMatchObject({ events: EVENTS, late: LATE })
  // Stripe's summaries are double sums (SummaryTolerance.ts): the total drift is their rounding
  // residue, not exactly 0. The generator's values have at most 3 decimals, so any real drift
  // (a missing or doubled event) is at least 0.001; rounding stays far below 1e-9.
  const drift = report.reconciliation.driftTotal.replace(/^-/, "")
  expect(Number(drift)).toBeLessThan(1e-9)
  expect(report.reconciliation.rowsWithDrift).toBe(0)
  expect(report.reconciliation.unavailablePairs).toBe(0)
  // stripeTotal is a sum of doubles: it equals syncedTotal up to the residue checked above.
  expect(report.webhooks.non2xx).toBe(0)
  expect(report.webhooks.byStatus["unmapped"]).toBe(3)
  expect(report.webhooks.duplicateDeliveries).toBe(1)
  expect(report.webhooks.duplicateRecordedOnce).toBe(true)
  expect(report.webhooks.reorderedFinalEmail).toBe(report.webhooks.reorderedExpectedEmail)
  expect(report.runs[0]!.trigger).toBe("manual")
  expect(report.runs[report.runs.length - 1]!.trigger).toBe("schedule")
}

forEachBackend(["pglite", "postgres", "clickhouse"], (backend) => {
  describe(`demo (${backend})`, () => {
    const cleanups: Array<() => Promise<void>> = []
    afterAll(async () => {
      for (const c of cleanups) await c()
    })

    it(
      "runs end to end under injected faults and every total matches exactly",
      async () => {
        // The client's backoff bases at test scale: the seeded faults and the retries through them
        // are the same, without production's 0.5 s / 1 s waits between attempts.
        const env: Record<string, string> = {
          FLEXPRICE_DATABASE_URL: "",
          FLEXPRICE_CLICKHOUSE_URL: "",
          STRIPE_RETRY_RATE_LIMITED_BASE_MS: "5",
          STRIPE_RETRY_UNAVAILABLE_BASE_MS: "5"
        }
        // The embedded database from a copy of the migrated template (as every embedded test app);
        // the CLI test below runs the demo on a fresh directory of its own.
        let dataDir: string | undefined
        if (backend !== "postgres") {
          const dir = freshDataDir()
          cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
          dataDir = dir
        }
        if (backend === "postgres") {
          const db = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
          cleanups.push(db.drop)
          env["FLEXPRICE_DATABASE_URL"] = db.url
        }
        if (backend === "clickhouse") {
          env["FLEXPRICE_CLICKHOUSE_URL"] = process.env["FLEXPRICE_TEST_CLICKHOUSE_URL"]!
          env["FLEXPRICE_CLICKHOUSE_DATABASE"] = "flexprice_test"
        }
        const report = await Effect.runPromise(
          runDemo({ customers: CUSTOMERS, events: EVENTS, late: LATE, seed: SEED, faults: true, print: false, env, ...(dataDir !== undefined ? { dataDir } : {}) })
        )
        assertReport(report)
        // the faults really happened and the client retried through them
        expect(report.stripe.faultResponses.rateLimited).toBeGreaterThanOrEqual(1)
        expect(report.stripe.faultResponses.serverErrors).toBeGreaterThanOrEqual(1)
        // ... and the client retried through them: the first run completed and synced every mapped batch
        const first = report.runs[0]!
        expect(first.status).toBe("completed")
        expect(first.batchesFailed).toBe(0)
        expect(first.batchesSynced + first.batchesSkipped).toBe(first.batchesCreated)
        expect(first.batchesSynced).toBe(CUSTOMERS * 2)
        expect(report.backend).toContain(backend === "postgres" ? "PostgreSQL" : `PGlite (${dataDir})`)
        if (backend === "clickhouse") expect(report.backend).toContain("ClickHouse")
        const text = formatReport(report, { keep: false })
        expect(text).toContain("OK: every total matches exactly")
        expect(text).not.toContain("FAILED")
      },
      180_000
    )
  })
})

describe("demo report", () => {
  it("a mismatch is reported as FAILED with the reason", () => {
    const base = {
      ok: false,
      failures: ["tokens: Stripe received 9, the generator sent 10 for mapped customers"],
      backend: "x",
      dataDir: null,
      serviceUrl: "http://127.0.0.1:1",
      emulatorUrl: "http://127.0.0.1:2",
      window: { start: "2025-01-01T00:00:00.000Z", end: "2025-01-01T01:00:00.000Z" },
      customers: { onboarded: 1, unmappedStripe: 0, withoutStripe: 0 },
      webhooks: {
        deliveries: 0,
        non2xx: 0,
        byStatus: {},
        duplicateDeliveries: 0,
        duplicateRecordedOnce: false,
        duplicatesAnswered: null,
        reorderedFinalEmail: null,
        reorderedExpectedEmail: ""
      },
      ingest: { events: 0, late: 0, ms: 0, eventsPerSecond: 0 },
      runs: [],
      meters: [
        {
          meter: "tokens",
          meterId: "mtr_1",
          stripeMeterId: "mtr_2",
          events: 1,
          expectedAll: "10",
          expectedMapped: "10",
          ledgerTotal: "10",
          ledgerSynced: "10",
          stripeReceived: "9",
          batchesSynced: 1,
          batchesRetried: 0,
          lateDeltas: 0,
          batchesSkipped: 0,
          skippedQuantity: "0",
          batchesFailed: 0,
          batchesPending: 0
        }
      ],
      pairs: { checked: 1, mismatched: 1 },
      stripe: {
        callsByPhase: {},
        callsByEndpoint: {},
        faultResponses: { rateLimited: 0, serverErrors: 0, dropped: 0 },
        clientRetries: 0,
        meterEventsAccepted: 1,
        streamErrors: 0
      },
      reconciliation: { pairs: 1, rows: 1, rowsWithDrift: 1, syncedTotal: "10", stripeTotal: "9", driftTotal: "-1", unavailablePairs: 0 },
      status: {},
      phases: [],
      wallMs: 1
    } satisfies DemoReport
    const text = formatReport(base, { keep: false })
    expect(text).toMatch(/tokens .* NO /)
    expect(text).toContain("FAILED:")
    expect(text).toContain("Stripe received 9, the generator sent 10")
    expect(text).not.toContain("OK:")
  })
})

describe("npm run demo (CLI)", () => {
  it(
    "exits 0 and prints the table when every total matches",
    () => {
      const root = path.resolve(import.meta.dirname, "../..")
      const env: Record<string, string | undefined> = { ...process.env, FLEXPRICE_DATABASE_URL: "", FLEXPRICE_CLICKHOUSE_URL: "" }
      const res = spawnSync(
        process.execPath,
        ["--import", "tsx", "src/bin/flexprice.ts", "demo", "--customers", "5", "--events", "200", "--late", "10", "--no-faults"],
        { cwd: root, env, encoding: "utf8", timeout: 150_000 }
      )
      expect(res.stderr).not.toContain("flexprice: demo failed")
      expect(res.status).toBe(0)
      expect(res.stdout).toContain("faults off")
      expect(res.stdout).toMatch(/api_calls .* yes /)
      expect(res.stdout).toMatch(/tokens .* yes /)
      expect(res.stdout).toContain("OK: every total matches exactly")
      expect(res.stdout).toMatch(/Total wall time: \d+\.\d s/)
    },
    180_000
  )
})

import { defineConfig } from "vitest/config"

const forks = () => {
  const n = Number(process.env["FLEXPRICE_TEST_FORKS"] ?? "2")
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new Error(`FLEXPRICE_TEST_FORKS must be an integer 1-16, got ${process.env["FLEXPRICE_TEST_FORKS"]}`)
  return n
}

/**
 * Test files that read process-wide state and so need a process of their own each: the metric
 * registry and telemetry readers (Effect's metric registry is global to the process, and these
 * files assert exact counts), module mocks and spies. Every other file is in project "shared",
 * which `npm test` (scripts/test.mjs) runs with `--isolate=false`: a worker keeps its modules
 * between files instead of importing the product's module graph (Effect, the drivers, the source
 * modules) again for each (BENCHMARKS.md, "The test suite"). Vitest takes isolation from the
 * run, not from a project, hence the two runs; `npx vitest run` runs both projects isolated.
 */
const ISOLATED = [
  "test/core/api-keys.test.ts",
  "test/core/hostile-small.test.ts",
  "test/core/metric-labels.test.ts",
  "test/events/aggregate-sql-clickhouse.test.ts",
  "test/events/clickhouse.test.ts",
  "test/migration/link-many.test.ts",
  "test/observability/**/*.test.ts",
  "test/security/Encryption.test.ts",
  "test/stripe-config/config.test.ts",
  "test/sync/auth-repair.test.ts",
  "test/sync/call-budget.test.ts",
  "test/sync/crash.test.ts",
  "test/sync/scheduled-reconciliation.test.ts",
  "test/sync/stream-error-reports.test.ts",
  "test/sync/trace.test.ts",
  "test/webhooks/webhooks.test.ts"
]

export default defineConfig({
  test: {
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // PGlite and the emulator are heavy; two cores here. FLEXPRICE_TEST_FORKS tries another count
    // (.ci/run prints how busy the CPU was during each pass: near 100 % means more forks only queue).
    poolOptions: { forks: { maxForks: forks(), minForks: 1 } },
    projects: [
      { extends: true, test: { name: "isolated", include: ISOLATED } },
      {
        extends: true,
        test: { name: "shared", include: ["test/**/*.test.ts"], exclude: ISOLATED, setupFiles: ["test/support/restoreEffectVitest.ts"] }
      }
    ]
  }
})

/**
 * The aggregation SQL tests only: the statements run on a real engine (the ClickHouse server, one
 * PGlite per file for PostgreSQL) and answers are compared with the oracle. What
 * `npm run mutate:sql` (stryker.sql.config.json) runs against every mutant. The ClickHouse tests need
 * FLEXPRICE_TEST_CLICKHOUSE_URL (leave FLEXPRICE_TEST_CHDB_PATH unset: chdb's engine does not
 * survive Stryker's re-runs in one worker thread); the globalSetup builds the PGlite template once.
 */
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: [
      "test/events/aggregate-sql-clickhouse.test.ts",
      "test/events/clickhouse-late-windows.test.ts",
      "test/events/aggregate-sql-postgres.test.ts"
    ],
    globalSetup: ["test/support/globalSetup.ts"],
    setupFiles: ["test/support/fc-mutation-setup.ts"],
    env: { FC_MAX_RUNS: "8" },
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 1, minForks: 1 } }
  }
})

/**
 * The ledger statement tests only (test/repositories/ledger-*.test.ts): each statement of
 * src/repositories/ledger/*.ts runs on one PGlite per file over generated ledgers and is compared
 * with the model (ledgerModel.ts). What `npm run mutate:ledger` (stryker.ledger.config.json) runs
 * against every mutant; properties capped at 5 cases (FC_MAX_RUNS). The globalSetup builds the
 * migrated PGlite template once.
 */
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/repositories/ledger-*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    setupFiles: ["test/support/fc-mutation-setup.ts"],
    env: { FC_MAX_RUNS: "5" },
    testTimeout: 240_000,
    hookTimeout: 120_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 1, minForks: 1 } }
  }
})

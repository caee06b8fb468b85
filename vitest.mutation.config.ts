/**
 * The fast unit/property tests of the money modules only (no database, no emulator, no
 * globalSetup): what `npm run mutate` (stryker.config.json) runs against every mutant. Properties
 * run 25 cases each here (FC_MAX_RUNS), enough with the edge-biased generators; the normal suite
 * runs them in full.
 */
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/domain/decimal.test.ts", "test/domain/money-edges.test.ts", "test/sync/pure.test.ts"],
    setupFiles: ["test/support/fc-mutation-setup.ts"],
    env: { FC_MAX_RUNS: "25" },
    testTimeout: 60_000,
    pool: "threads"
  }
})

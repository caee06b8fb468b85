/**
 * Vitest config for `npm run simulate` (scripts/simulate.ts): runs only the simulator entry
 * (test/simulation/cli.sim.ts), with the same global setup (the migrated PGlite template) as the
 * suite, one fork, no time limit.
 */
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/simulation/cli.sim.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 0,
    hookTimeout: 120_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 1, minForks: 1 } }
  }
})

/**
 * The fast unit/property tests of the money modules only (no database, no emulator, no
 * globalSetup): what `npm run mutate` (stryker.config.json) runs against every mutant.
 */
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/domain/decimal.test.ts", "test/sync/pure.test.ts"],
    testTimeout: 60_000,
    pool: "threads"
  }
})

import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // PGlite and the emulator are heavy; two cores here.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } }
  }
})

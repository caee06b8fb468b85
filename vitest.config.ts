import { defineConfig } from "vitest/config"

const forks = () => {
  const n = Number(process.env["FLEXPRICE_TEST_FORKS"] ?? "2")
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new Error(`FLEXPRICE_TEST_FORKS must be an integer 1-16, got ${process.env["FLEXPRICE_TEST_FORKS"]}`)
  return n
}

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // PGlite and the emulator are heavy; two cores here. FLEXPRICE_TEST_FORKS tries another count
    // (.ci/run prints how busy the CPU was during each pass: near 100 % means more forks only queue).
    poolOptions: { forks: { maxForks: forks(), minForks: 1 } }
  }
})

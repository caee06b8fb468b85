/**
 * Gating for suites that need a ClickHouse server (the same pattern serves PostgreSQL):
 * - `FLEXPRICE_TEST_CLICKHOUSE_URL` set → the suite runs against it;
 * - unset on a laptop → one test that says how to enable the suite (and passes);
 * - unset with `CI` set → that same test fails: CI must never silently skip a backend.
 */
import { it } from "@effect/vitest"
import { Option } from "effect"
import { expect } from "vitest"

export const CLICKHOUSE_URL_VAR = "FLEXPRICE_TEST_CLICKHOUSE_URL"
export const CLICKHOUSE_EXAMPLE_URL = "http://127.0.0.1:8123"
/** Database the test suites share (every test uses its own random tenant/environment). */
export const CLICKHOUSE_TEST_DATABASE = "flexprice_test"

const fromEnv = (name: string): Option.Option<string> => {
  const v = process.env[name]
  return v === undefined || v.trim() === "" ? Option.none() : Option.some(v.trim())
}

export const clickHouseTestUrl = (): Option.Option<string> => fromEnv(CLICKHOUSE_URL_VAR)

/** The test database unless the URL names one in its path. */
export const clickHouseTestDatabase = (url: string): string | undefined =>
  new URL(url).pathname.replace(/^\/+|\/+$/g, "") === "" ? CLICKHOUSE_TEST_DATABASE : undefined

/**
 * `FLEXPRICE_TEST_BACKENDS=pglite`: only the embedded backend's suites register; no service suite
 * is declared at all (not skipped: absent). `.ci/run` sets it for its second pass, on Node 24, after
 * the first pass (Node 20) has run every backend with each service required.
 */
export const pgliteOnly = (): boolean => Option.contains(fromEnv("FLEXPRICE_TEST_BACKENDS"), "pglite")

/**
 * Registers `register(url)` when the variable is set; otherwise the single explanatory test.
 * `label` names the suite in the test title ("clickhouse", "postgres", ...).
 */
export const withServiceUrl = (
  options: { readonly label: string; readonly envVar: string; readonly example: string },
  register: (url: string) => void
): void =>
  pgliteOnly() ? undefined : Option.match(fromEnv(options.envVar), {
    onSome: register,
    onNone: () =>
      it(`${options.label} suite disabled: set ${options.envVar}=${options.example} to run it`, () => {
        const ci = process.env["CI"]
        expect(
          ci === undefined || ci === "" || ci === "false",
          `${options.envVar} is not set but CI is: the ${options.label} suite must run in CI (start the service and export ${options.envVar}=${options.example})`
        ).toBe(true)
      })
  })

export const withClickHouse = (register: (url: string) => void): void =>
  withServiceUrl({ label: "clickhouse", envVar: CLICKHOUSE_URL_VAR, example: CLICKHOUSE_EXAMPLE_URL }, register)

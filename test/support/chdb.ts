/**
 * The project's ClickHouse client interface (`ChClient`, src/events/clickhouse/Client.ts) over
 * chdb: a current ClickHouse engine in process (npm `chdb`, whose engine library is ~550 MB, so it
 * is never in the default install). `.ci/run` installs it outside the checkout and exports
 * `FLEXPRICE_TEST_CHDB_PATH` (the package directory); the suite loads it from there by absolute path.
 * Gating as for the servers (test/support/clickhouse.ts): unset on a laptop → one explanatory
 * test; unset with `CI` → that test fails.
 *
 * The adapter sends exactly the statements the store builds, with no settings of its own, so the
 * engine answers with its defaults, as a current server does to `@clickhouse/client` (which sends
 * none either). chdb allows one data directory per process, so every client of a test file shares
 * one session; a client bound to a database runs `USE <db>; <statement>` as one call, serialized
 * by a lock so no other client's `USE` comes in between.
 */
import { afterAll } from "vitest"
import { Effect, Layer } from "effect"
import { createRequire } from "node:module"
import { fromClient } from "../../src/events/ClickHouseEventStore.js"
import { DEFAULT_DATABASE, type ChClient, type ClickHouseConnection, type Row } from "../../src/events/clickhouse/Client.js"
import { ClickHouseMigrator } from "../../src/events/clickhouse/Migrator.js"
import { identifier, isIdentifier } from "../../src/events/clickhouse/escape.js"
import { EventStore, EventStoreError } from "../../src/events/EventStore.js"
import { withServiceUrl } from "./clickhouse.js"

export const CHDB_PATH_VAR = "FLEXPRICE_TEST_CHDB_PATH"
/** where .ci/run installs it */
export const CHDB_EXAMPLE_PATH = "$HOME/.cache/flexprice-chdb-3.4.0/node_modules/chdb"

/** The part of chdb's API the adapter uses (its index.d.ts; typed here since chdb is not installed with the project). */
interface ChdbSession {
  queryAsync(query: string, options?: { readonly format?: string }): Promise<{ text(): string }>
  insert(params: {
    readonly table: string
    readonly values: Buffer
    readonly format: "TabSeparated"
    readonly columns: ReadonlyArray<string>
  }): Promise<unknown>
  close(): void
}
interface ChdbModule {
  readonly Session: new () => ChdbSession
}

let shared: { readonly session: ChdbSession; readonly lock: Effect.Semaphore } | undefined

/** The process's one chdb session (a temporary data directory, removed when the test file ends). */
const sessionAt = (path: string) => {
  if (shared === undefined) {
    const chdb = createRequire(import.meta.url)(path) as ChdbModule
    shared = { session: new chdb.Session(), lock: Effect.unsafeMakeSemaphore(1) }
  }
  return shared
}

/** The engine's version, e.g. "26.7.2.1". */
export const chdbVersion = (path: string): Promise<string> =>
  sessionAt(path)
    .session.queryAsync("SELECT version() AS v", { format: "JSONEachRow" })
    .then((r) => String((JSON.parse(r.text()) as Row)["v"]))

/** chdb's errors carry the ClickHouse code as `clickhouseCode`; the store reads it as `code`, as from the server. */
const asCause = (error: unknown): Error => {
  const out = new Error(error instanceof Error ? error.message : String(error))
  const code = error !== null && typeof error === "object" && "clickhouseCode" in error ? (error as { clickhouseCode: unknown }).clickhouseCode : undefined
  if (typeof code === "number" || typeof code === "string") Object.assign(out, { code: String(code) })
  return out
}

/** A client bound to `database` (chdb's own default database when "default"), like `makeClient`. */
export const chdbClient = (path: string, database: string): ChClient => {
  if (!isIdentifier(database)) throw new Error(`database name must match [A-Za-z_][A-Za-z0-9_]*, got ${JSON.stringify(database)}`)
  const { session, lock } = sessionAt(path)
  const connection: ClickHouseConnection = {
    url: "chdb:",
    database,
    username: undefined,
    password: undefined,
    requestTimeoutMs: 300_000
  }
  const use = `USE ${identifier(database).text}; `
  const run = <A>(operation: string, f: () => Promise<A>) =>
    lock.withPermits(1)(
      Effect.tryPromise({ try: f, catch: (e) => new EventStoreError({ backend: "clickhouse", operation, cause: asCause(e) }) })
    )
  return {
    connection,
    query: (operation, query) =>
      run(operation, async () => {
        const text = (await session.queryAsync(use + query.text, { format: "JSONEachRow" })).text()
        return text
          .split("\n")
          .filter((line) => line.trim() !== "")
          .map((line) => JSON.parse(line) as Row)
      }),
    command: (operation, query) => run(operation, () => session.queryAsync(use + query.text)).pipe(Effect.asVoid),
    insertTsv: (operation, table, columns, data) =>
      run(operation, () =>
        session.insert({ table: `${identifier(database).text}.${identifier(table).text}`, values: Buffer.from(data, "utf8"), format: "TabSeparated", columns })
      ).pipe(Effect.asVoid),
    ping: (operation) => run(operation, () => session.queryAsync("SELECT 1")).pipe(Effect.asVoid)
  }
}

/** The EventStore on chdb, built as `ClickHouseEventStore.make` builds it: migrate, then `fromClient`. */
export const chdbEventStoreLayer = (path: string, database: string = DEFAULT_DATABASE): Layer.Layer<EventStore, EventStoreError> =>
  Layer.effect(
    EventStore,
    Effect.gen(function* () {
      const bootstrap = yield* Effect.try({
        try: () => chdbClient(path, "default"),
        catch: (cause) => new EventStoreError({ backend: "clickhouse", operation: "connect", cause })
      })
      const client = chdbClient(path, database)
      yield* ClickHouseMigrator({ bootstrap, client })
      return fromClient(client)
    })
  )

/**
 * Registers `register(path)` when FLEXPRICE_TEST_CHDB_PATH is set (the session is closed after
 * the file's tests); otherwise the explanatory test, failing in CI.
 */
export const withChdb = (register: (path: string) => void): void =>
  withServiceUrl({ label: "chdb", envVar: CHDB_PATH_VAR, example: CHDB_EXAMPLE_PATH }, (path) => {
    afterAll(() => {
      shared?.session.close()
      shared = undefined
    })
    register(path)
  })

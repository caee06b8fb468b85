/**
 * Applies `migrations/clickhouse/NNNN_name.sql` in order, recording each in `schema_migrations`.
 * The files use `CREATE ... IF NOT EXISTS`, so two processes migrating at once end in the same
 * schema (at worst a migration is recorded twice, which is harmless).
 */
import { Effect } from "effect"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { dirname, join as joinPath } from "node:path"
import { fileURLToPath } from "node:url"
import { EventStoreError } from "../EventStore.js"
import type { ChClient } from "./Client.js"
import { identifier, Sql, sql, tsvDateTime, tsvLine, tsvString, tsvUInt } from "./escape.js"

export interface ClickHouseMigration {
  readonly version: number
  readonly name: string
  readonly statements: ReadonlyArray<string>
}

/** Finds `migrations/clickhouse` above this module (works from `src/` under tsx and from `dist/`). */
export const defaultMigrationsDir = (): string => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 10; i++) {
    const candidate = joinPath(dir, "migrations", "clickhouse")
    if (existsSync(candidate)) return candidate
    const parent = dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  throw new Error("migrations/clickhouse not found above " + dirname(fileURLToPath(import.meta.url)))
}

const stripComments = (statement: string): string =>
  statement
    .split("\n")
    .map((line) => line.replace(/--.*$/, ""))
    .join("\n")
    .trim()

/** Statements end with `;` at the end of a line; `--` comments are removed (18.16 runs one statement per request). */
export const splitStatements = (text: string): ReadonlyArray<string> =>
  text
    .split(/;[ \t]*(?:\r?\n|$)/)
    .map(stripComments)
    .filter((s) => s.length > 0)

export const loadMigrations = (dir: string): ReadonlyArray<ClickHouseMigration> =>
  readdirSync(dir)
    .filter((f) => /^\d+_[A-Za-z0-9_]+\.sql$/.test(f))
    .map((file) => {
      const [, num, name] = /^(\d+)_(.+)\.sql$/.exec(file)!
      return { version: Number(num), name: name!, statements: splitStatements(readFileSync(joinPath(dir, file), "utf8")) }
    })
    .sort((a, b) => a.version - b.version)

/**
 * Old servers check IF NOT EXISTS and create in two steps: a concurrent migrator (another test
 * worker, a second replica starting) can make the loser fail with TABLE_ALREADY_EXISTS (57) or
 * DATABASE_ALREADY_EXISTS (82), which is the outcome it wanted.
 */
const alreadyExists = (e: EventStoreError): boolean => {
  const code = e.cause !== null && typeof e.cause === "object" && "code" in e.cause ? String((e.cause as { code: unknown }).code) : ""
  return code === "57" || code === "82"
}

/**
 * Creates the database (through `bootstrap`, a client on the server's default database) and
 * applies the pending migrations through `client` (bound to that database). Returns the versions applied.
 */
export const ClickHouseMigrator: (options: {
  readonly bootstrap: ChClient
  readonly client: ChClient
  readonly dir?: string | undefined
}) => Effect.Effect<ReadonlyArray<number>, EventStoreError> = Effect.fn("ClickHouseMigrator.migrate")(
  function* (options) {
    const { bootstrap, client } = options
    const db = identifier(client.connection.database)
    yield* bootstrap.command("migrate", sql`CREATE DATABASE IF NOT EXISTS ${db}`).pipe(Effect.catchIf(alreadyExists, () => Effect.void))
    yield* client
      .command(
        "migrate",
        new Sql(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime('UTC')) " +
            "ENGINE = ReplacingMergeTree() ORDER BY version"
        )
      )
      .pipe(Effect.catchIf(alreadyExists, () => Effect.void))
    const migrations = yield* Effect.try({
      try: () => loadMigrations(options.dir ?? defaultMigrationsDir()),
      catch: (cause) => new EventStoreError({ backend: "clickhouse", operation: "migrate", cause })
    })
    const applied = new Set(
      (yield* client.query("migrate", new Sql("SELECT DISTINCT version FROM schema_migrations"))).map((r) => Number(r["version"]))
    )
    const done: Array<number> = []
    for (const m of migrations) {
      if (applied.has(m.version)) continue
      for (const statement of m.statements) {
        yield* client.command(`migrate ${m.version}_${m.name}`, new Sql(statement)).pipe(Effect.catchIf(alreadyExists, () => Effect.void))
      }
      yield* client.insertTsv(
        "migrate",
        "schema_migrations",
        ["version", "name", "applied_at"],
        tsvLine([tsvUInt(m.version), tsvString(m.name), tsvDateTime(new Date())])
      )
      done.push(m.version)
    }
    return done
  }
)

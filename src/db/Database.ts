/**
 * The relational store: PGlite (embedded, default) or PostgreSQL, both reached through
 * `@effect/sql-pg`, so every repository runs the same SQL on both.
 *
 * Embedded mode: PGlite runs in this process; `@electric-sql/pglite-socket` serves it on a Unix
 * socket in a fresh 0700 directory, and PgClient talks to it with exactly one connection
 * (PGlite executes one query at a time anyway).
 */
import { SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Data, Effect, Layer, Option, Redacted, String as Str } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DatabaseConfig } from "../config/AppConfig.js"
import { scrubString } from "../observability/Scrub.js"
import { acquireDataDirLock } from "./DataDirLock.js"
import { tightenDataDir } from "./DataDirMode.js"
import { runMigrations } from "./Migrations.js"
import { asOwner, TenantScopedPool } from "./RowSecurity.js"

export class DatabaseStartFailed extends Data.TaggedError("DatabaseStartFailed")<{
  readonly reason: string
}> {
  override get message() {
    return `database failed to start: ${this.reason}`
  }
}

/**
 * A name conversion computed once per distinct name. @effect/sql converts every key of every
 * result row, so a large page ran `snakeToCamel` (a regex replace) once per cell for a handful of
 * distinct names — a visible share of a push-queue read (BENCHMARKS.md, "Sync"). Names come
 * from the service's own SQL, so the set is small; the cap only guards against an unforeseen
 * stream of distinct aliases.
 */
export const memoizeName = (convert: (name: string) => string, cap = 4096): ((name: string) => string) => {
  const names = new Map<string, string>()
  return (name) => {
    const hit = names.get(name)
    if (hit !== undefined || names.has(name)) return hit as string
    const converted = convert(name)
    if (names.size < cap) names.set(name, converted)
    return converted
  }
}

const clientOptions = {
  transformQueryNames: memoizeName(Str.camelToSnake),
  transformResultNames: memoizeName(Str.snakeToCamel),
  // Column names are snake_case ↔ camelCase; keys INSIDE json/jsonb values are user data
  // (customer metadata, Stripe payload keys) and must come back exactly as stored.
  transformJson: false,
  // pg parses numeric and int8 as strings by default: quantities stay exact.
  applicationName: "flexprice"
} as const

/**
 * PgClient over a TenantScopedPool (RowSecurity.ts): every checkout runs as the role and tenant
 * of the fiber asking. The pool is probed once so a wrong address fails the start, not the
 * first request.
 */
const scopedClient = (poolConfig: Record<string, unknown>) =>
  PgClient.layerFromPool({
    acquire: Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const pool = new TenantScopedPool({ application_name: clientOptions.applicationName, ...poolConfig })
          // pg emits idle-client errors on the pool; without a listener they would crash the process
          pool.on("error", () => undefined)
          try {
            await pool.query("SELECT 1")
          } catch (e) {
            await pool.end().catch(() => undefined)
            throw e
          }
          return pool
        },
        catch: (cause) => new SqlError.SqlError({ cause, message: "PgClient: Failed to connect" })
      }).pipe(
        Effect.timeoutFail({
          duration: "5 seconds",
          onTimeout: () => new SqlError.SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" })
        }),
        // before the first migration the service roles may not exist yet
        asOwner("connection probe")
      ),
      (pool) => Effect.promise(() => pool.end()).pipe(Effect.ignore, Effect.timeoutOption("1 second"))
    ),
    ...clientOptions
  })

/** Start PGlite on a Unix socket; resolves to the socket directory. */
const startEmbedded = (dataDir: string) =>
  Effect.gen(function* () {
    yield* acquireDataDirLock(dataDir)
    const tighten = Effect.try({
      try: () => tightenDataDir(dataDir),
      catch: (e) => new DatabaseStartFailed({ reason: `cannot restrict the permissions of ${dataDir} to its owner: ${(e as Error).message}` })
    })
    const loosened = yield* tighten
    if (loosened > 0) yield* Effect.logWarning(`restricted ${loosened} entries of ${dataDir} to the service's user (0700/0600)`)
    const pgdata = path.join(dataDir, "pgdata")
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const db = new PGlite(pgdata)
          await db.waitReady
          return db
        },
        catch: (e) => new DatabaseStartFailed({ reason: `PGlite could not open ${pgdata}: ${(e as Error).message}` })
      }),
      (db) => Effect.promise(() => db.close()).pipe(Effect.ignore)
    )
    // PGlite creates its files 0666 when it opens a new directory
    yield* tighten
    const socketDir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-pg-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    fs.chmodSync(socketDir, 0o700)
    const server = new PGLiteSocketServer({ db, path: path.join(socketDir, ".s.PGSQL.5432"), maxConnections: 1 })
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => server.start(),
        catch: (e) => new DatabaseStartFailed({ reason: `PGlite socket: ${(e as Error).message}` })
      }),
      () => Effect.promise(() => server.stop()).pipe(Effect.ignore)
    )
    return socketDir
  })

/** PgClient for the configured mode; migrations are run separately (`Migrations`). */
export const layerFrom = (config: DatabaseConfig) =>
  Option.match(config.url, {
    onNone: () =>
      Layer.unwrapScoped(
        Effect.map(startEmbedded(config.dataDir), (socketDir) =>
          scopedClient({ host: socketDir, port: 5432, database: "postgres", user: "postgres", max: 1, min: 1 })
        )
      ),
    onSome: (url) => scopedClient({ connectionString: Redacted.value(url), max: 10 })
  })

export const layerMigrated = (config: DatabaseConfig) =>
  Layer.effectDiscard(runMigrations()).pipe(Layer.provideMerge(layerFrom(config)))

export const layerMigratedFromEnv = Layer.unwrapEffect(Effect.map(DatabaseConfig, layerMigrated))

export const describe = (config: DatabaseConfig): string =>
  Option.match(config.url, {
    onNone: () => `embedded PGlite in ${path.resolve(config.dataDir)}`,
    onSome: (url) => `PostgreSQL at ${redactUrl(Redacted.value(url))}`
  })

/** postgres://user:pass@host/db → postgres://user:[Filtered]@host/db */
const redactUrl = (u: string): string => scrubString(u)


/**
 * Runs the numbered SQL files in `migrations/` through the @effect/sql migrator, on PGlite and
 * PostgreSQL alike. The migrator's own loader only imports JS modules, so SQL files are loaded
 * here and executed as one simple-protocol statement list each.
 */
import { Migrator } from "@effect/sql"
import { PgMigrator } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import * as fs from "node:fs"
import { asOwner, assertTenantTablesGuarded } from "./RowSecurity.js"
import { fileURLToPath } from "node:url"

/** `migrations/` at the package root, from src/db (tsx) or dist/db (built). */
export const migrationsDir = fileURLToPath(new URL("../../migrations", import.meta.url))

export const sqlFileLoader = (dir: string): Migrator.Loader =>
  Effect.try({
    try: () =>
      fs
        .readdirSync(dir)
        .map((file) => /^(\d+)_([^.]+)\.sql$/.exec(file))
        .filter((m): m is RegExpExecArray => m !== null)
        .map(
          ([file, id, name]) =>
            [
              Number(id),
              name!,
              Effect.succeed(
                Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(fs.readFileSync(`${dir}/${file}`, "utf8")))
              )
            ] as const
        )
        .sort(([a], [b]) => a - b),
    catch: (e) => new Migrator.MigrationError({ reason: "failed", message: `cannot read ${dir}: ${(e as Error).message}` })
  })

export const runMigrations = Effect.fn("Migrations.run")(
  () => PgMigrator.run({ loader: sqlFileLoader(migrationsDir) }),
  Effect.tap((done) =>
    done.length > 0 ? Effect.logInfo(`applied migrations: ${done.map(([id, name]) => `${id}_${name}`).join(", ")}`) : Effect.void
  ),
  Effect.zipLeft(assertTenantTablesGuarded),
  asOwner("schema migrations")
)

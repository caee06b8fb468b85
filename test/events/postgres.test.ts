/** The shared EventStore contract on the PostgreSQL backend: PGlite and a PostgreSQL server. */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer, Option, Redacted } from "effect"
import * as Database from "../../src/db/Database.js"
import * as PgEventStore from "../../src/events/PgEventStore.js"
import { forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"
import { eventStoreContract } from "./EventStoreContract.js"

/** A migrated database of the backend, created when the suite's layer is built. */
const databaseFor = (backend: "pglite" | "postgres") =>
  backend === "pglite"
    ? Layer.suspend(() => Database.layerFrom({ url: Option.none(), dataDir: freshDataDir() }))
    : Layer.unwrapScoped(
        Effect.map(
          Effect.acquireRelease(
            Effect.promise(() => freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)),
            (db) => Effect.promise(() => db.drop())
          ),
          (db) => Database.layerMigrated({ url: Option.some(Redacted.make(db.url)), dataDir: "" }).pipe(Layer.provide(NodeContext.layer))
        )
      )

forEachBackend(["pglite", "postgres"], (backend) => {
  if (backend === "clickhouse") return
  eventStoreContract(`EventStore contract on ${backend}`, PgEventStore.layer.pipe(Layer.provide(databaseFor(backend))))
})

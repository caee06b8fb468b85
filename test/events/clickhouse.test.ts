/**
 * The EventStore contract against a real ClickHouse server (FLEXPRICE_TEST_CLICKHOUSE_URL; see
 * test/support/clickhouse.ts), plus ClickHouse-only checks: migrations, configuration, errors.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer, Redacted } from "effect"
import { ClickHouseEventStore } from "../../src/events/ClickHouseEventStore.js"
import { makeClient, resolveConnection } from "../../src/events/clickhouse/Client.js"
import { ClickHouseMigrator, loadMigrations, defaultMigrationsDir, splitStatements } from "../../src/events/clickhouse/Migrator.js"
import { Sql } from "../../src/events/clickhouse/escape.js"
import { EventStore, EventStoreError } from "../../src/events/EventStore.js"
import { clickHouseTestDatabase, withClickHouse } from "../support/clickhouse.js"
import { eventStoreContract } from "./EventStoreContract.js"

describe("ClickHouse connection settings", () => {
  it("takes credentials and the database out of the URL", () => {
    const c = resolveConnection({ url: "http://bob:s3cr%40t@127.0.0.1:8123/analytics" })
    expect(c.url).toBe("http://127.0.0.1:8123")
    expect(c.database).toBe("analytics")
    expect(c.username).toBe("bob")
    expect(Redacted.value(c.password!)).toBe("s3cr@t")
    expect(String(c.password)).not.toContain("s3cr")
  })
  it("defaults the database to flexprice; an explicit database wins over the path", () => {
    expect(resolveConnection({ url: "http://127.0.0.1:8123" }).database).toBe("flexprice")
    expect(resolveConnection({ url: "http://127.0.0.1:8123/x", database: "y" }).database).toBe("y")
  })
  it("refuses bad URLs and database names without echoing the URL", () => {
    expect(() => resolveConnection({ url: Redacted.make("not a url:pw") })).toThrow(/not a valid URL/)
    expect(() => resolveConnection({ url: "ftp://h/db" })).toThrow(/http or https/)
    expect(() => resolveConnection({ url: "http://u:hunter2@h:8123/bad-name" })).toThrow(/database name/)
    try {
      resolveConnection({ url: "http://u:hunter2@h:8123/bad-name" })
    } catch (e) {
      expect(String(e)).not.toContain("hunter2")
    }
  })
  it("splits migration files into statements and finds the migration directory", () => {
    expect(splitStatements("-- c\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n-- end\n")).toEqual([
      "CREATE TABLE a (x UInt8) ENGINE = Memory",
      "SELECT 1"
    ])
    const migrations = loadMigrations(defaultMigrationsDir())
    expect(migrations.map((m) => m.version)).toEqual([1, 2, 3])
    expect(migrations.every((m) => m.statements.length === 1)).toBe(true)
  })
})

withClickHouse((url) => {
  const database = clickHouseTestDatabase(url)
  eventStoreContract("EventStore contract: ClickHouse", ClickHouseEventStore.layerWith({ url, database }))

  describe("ClickHouse specifics", () => {
    it.live("migrations are recorded and re-running them applies nothing", () =>
      Effect.gen(function* () {
        const connection = resolveConnection({ url, database: `flexprice_mig_${Date.now()}_${process.pid}` })
        const bootstrap = yield* makeClient(connection, "default")
        const client = yield* makeClient(connection)
        try {
          expect(yield* ClickHouseMigrator({ bootstrap, client })).toEqual([1, 2, 3])
          expect(yield* ClickHouseMigrator({ bootstrap, client })).toEqual([])
          const tables = yield* client.query("t", new Sql(`SELECT name FROM system.tables WHERE database = '${connection.database}' ORDER BY name`))
          expect(tables.map((t) => t["name"])).toEqual(["event_keys", "events", "events_processed", "schema_migrations"])
          const engines = yield* client.query(
            "t",
            new Sql(`SELECT engine FROM system.tables WHERE database = '${connection.database}' AND name LIKE 'event%'`)
          )
          expect(engines.map((t) => t["engine"])).toEqual(["ReplacingMergeTree", "ReplacingMergeTree", "ReplacingMergeTree"])
        } finally {
          yield* bootstrap.command("t", new Sql(`DROP DATABASE IF EXISTS ${connection.database}`))
        }
      }).pipe(Effect.scoped)
    )

    it.live("the layer reads FLEXPRICE_CLICKHOUSE_URL and FLEXPRICE_CLICKHOUSE_DATABASE", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        expect(store.backend).toBe("clickhouse")
        yield* store.ping
      }).pipe(
        Effect.provide(
          ClickHouseEventStore.layer.pipe(
            Layer.provide(
              Layer.setConfigProvider(
                ConfigProvider.fromMap(
                  new Map([
                    ["FLEXPRICE_CLICKHOUSE_URL", url],
                    ["FLEXPRICE_CLICKHOUSE_DATABASE", database ?? ""]
                  ])
                )
              )
            )
          )
        )
      )
    )

    it.live("an unreachable server fails with EventStoreError and no credentials in it", () =>
      Effect.gen(function* () {
        const exit = yield* Effect.exit(
          Effect.scoped(ClickHouseEventStore.make({ url: "http://admin:topsecret@127.0.0.1:1/db", requestTimeoutMs: 2_000 }))
        )
        expect(Exit.isFailure(exit)).toBe(true)
        if (Exit.isFailure(exit)) {
          const rendered = JSON.stringify(exit.cause) + String(exit.cause)
          expect(rendered).not.toContain("topsecret")
          const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          expect(error).toBeInstanceOf(EventStoreError)
          expect((error as EventStoreError).backend).toBe("clickhouse")
        }
      })
    )

    it.live("quantities with more than 12 fractional digits are refused, not rounded", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        const exit = yield* Effect.exit(
          store.insertProcessed([
            {
              tenantId: "tnt_x",
              environmentId: "env_x",
              eventId: "e",
              customerId: "cust_a",
              meterId: "mtr_a",
              eventName: "n",
              timestamp: new Date(),
              ingestedAt: new Date(),
              qtyTotal: "0.0000000000001",
              qtyBillable: "0.0000000000001"
            }
          ])
        )
        expect(Exit.isFailure(exit)).toBe(true)
      }).pipe(Effect.provide(ClickHouseEventStore.layerWith({ url, database })))
    )
  })
})

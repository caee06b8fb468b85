/**
 * The EventStore contract against a real ClickHouse server (FLEXPRICE_TEST_CLICKHOUSE_URL; see
 * test/support/clickhouse.ts) and against chdb's in-process engine, a current release
 * (FLEXPRICE_TEST_CHDB_PATH; see test/support/chdb.ts), plus ClickHouse-only checks on both:
 * migrations, racing copies, exactness; and server-only ones: configuration, errors.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, ConfigProvider, Effect, Exit, Layer, Metric, Redacted, type Scope, Stream } from "effect"
import * as Metrics from "../../src/observability/Metrics.js"
import { SpanTree, Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { ClickHouseEventStore, fromClient } from "../../src/events/ClickHouseEventStore.js"
import { normalize } from "../../src/domain/Decimal.js"
import { type ChClient, makeClient, resolveConnection } from "../../src/events/clickhouse/Client.js"
import { ClickHouseMigrator, loadMigrations, defaultMigrationsDir, splitStatements } from "../../src/events/clickhouse/Migrator.js"
import { Sql, sql, tsvDateTime, tsvLine, tsvString } from "../../src/events/clickhouse/escape.js"
import { EventStore, EventStoreError } from "../../src/events/EventStore.js"
import { chdbClient, chdbEventStoreLayer, withChdb } from "../support/chdb.js"
import { CLICKHOUSE_TEST_DATABASE, clickHouseTestDatabase, withClickHouse } from "../support/clickhouse.js"
import { eventStoreContract, freshScope, processedRow, storedEvent } from "./EventStoreContract.js"
import * as O from "../support/oracle.js"

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
    expect(migrations.map((m) => m.version)).toEqual([1, 2, 3, 4, 5])
    // 0004 creates processed_keys and 0005 processed_arrivals, each backfilled from events_processed
    expect(migrations.map((m) => m.statements.length)).toEqual([1, 1, 1, 2, 2])
  })
})

/**
 * A ClickHouse the store runs on: the server (18.16 here) or chdb's in-process engine (a current
 * release). Both get the same contract and the same ClickHouse checks, through the same `ChClient`.
 */
interface Backend {
  readonly label: string
  /** the database the shared suites use */
  readonly database: string
  /** a client bound to `database` ("default": the engine's default database), closed with the scope */
  readonly client: (database: string) => Effect.Effect<ChClient, EventStoreError, Scope.Scope>
  readonly store: (database: string) => Layer.Layer<EventStore, EventStoreError>
}

const clickHouseChecks = (backend: Backend): void => {
  describe(`ClickHouse specifics (${backend.label})`, () => {
    it.live("migrations are recorded and re-running them applies nothing", () =>
      Effect.gen(function* () {
        const database = `flexprice_mig_${Date.now()}_${process.pid}`
        const bootstrap = yield* backend.client("default")
        const client = yield* backend.client(database)
        try {
          expect(yield* ClickHouseMigrator({ bootstrap, client })).toEqual([1, 2, 3, 4, 5])
          expect(yield* ClickHouseMigrator({ bootstrap, client })).toEqual([])
          const tables = yield* client.query("t", new Sql(`SELECT name FROM system.tables WHERE database = '${database}' ORDER BY name`))
          expect(tables.map((t) => t["name"])).toEqual(["event_keys", "events", "events_processed", "processed_arrivals", "processed_keys", "schema_migrations"])
          const engines = yield* client.query(
            "t",
            new Sql(`SELECT engine FROM system.tables WHERE database = '${database}' AND name LIKE 'event%'`)
          )
          expect(engines.map((t) => t["engine"])).toEqual(["ReplacingMergeTree", "ReplacingMergeTree", "ReplacingMergeTree"])
        } finally {
          yield* bootstrap.command("t", new Sql(`DROP DATABASE IF EXISTS ${database}`))
        }
      }).pipe(Effect.scoped)
    )

    it.live("concurrent migrators on a fresh database all succeed", () =>
      Effect.gen(function* () {
        const database = `flexprice_migc_${Date.now()}_${process.pid}`
        const bootstrap = yield* backend.client("default")
        const clients = yield* Effect.all(Array.from({ length: 4 }, () => backend.client(database)))
        try {
          const applied = yield* Effect.all(
            clients.map((client) => ClickHouseMigrator({ bootstrap, client })),
            { concurrency: "unbounded" }
          )
          expect(applied.flat().length).toBeGreaterThanOrEqual(4)
          const tables = yield* clients[0]!.query("t", new Sql(`SELECT count() AS n FROM system.tables WHERE database = '${database}'`))
          expect(Number(tables[0]!["n"])).toBe(6)
        } finally {
          yield* bootstrap.command("t", new Sql(`DROP DATABASE IF EXISTS ${database}`))
        }
      }).pipe(Effect.scoped)
    )

    it.live("racing copies (inserted past the pre-check) are deduplicated by reads and by merges: the first copy wins", () =>
      Effect.gen(function* () {
        yield* Layer.build(backend.store(backend.database)) // migrated
        const raw = yield* backend.client(backend.database)
        const store = fromClient(raw)
        const scope = freshScope()
        const T = new Date("2025-04-01T10:00:00.000Z")
        const minute = (n: number) => new Date(T.getTime() + n * 60_000)
        const first = processedRow(scope, { eventId: "evt-race", timestamp: minute(5), ingestedAt: minute(61), qtyBillable: "3" })
        const late = { ...first, ingestedAt: minute(150), qtyBillable: "100", customerId: "cust_z" }
        // Two writers both passed the existence check: the late copy goes through the store, the
        // first one is written raw (as the racing writer did, its check having seen nothing).
        yield* store.insertProcessed([late])
        yield* raw.insertTsv(
          "t",
          "events_processed",
          ["tenant_id", "environment_id", "event_id", "meter_id", "customer_id", "event_name", "timestamp", "timestamp_ms", "ingested_at_ms", "qty_total", "qty_billable", "version"],
          tsvLine([
            scope.tenantId, scope.environmentId, first.eventId, first.meterId, first.customerId, first.eventName,
            tsvDateTime(first.timestamp), String(first.timestamp.getTime()), String(first.ingestedAt.getTime()), "3", "3",
            String(2n ** 42n - 1n - BigInt(first.ingestedAt.getTime()))
          ])
        )
        const e1 = storedEvent(scope, { eventId: "evt-race", timestamp: minute(5), ingestedAt: minute(61), propertiesJson: '{"copy":1}' })
        const e2 = { ...e1, timestamp: minute(7), ingestedAt: minute(62), propertiesJson: '{"copy":2}' }
        yield* store.insertEvents([e2])
        yield* raw.insertTsv(
          "t",
          "events",
          ["tenant_id", "environment_id", "event_id", "event_name", "external_customer_id", "customer_id", "timestamp", "timestamp_ms", "ingested_at_ms", "properties", "status", "error", "version"],
          tsvLine([
            scope.tenantId, scope.environmentId, e1.eventId, e1.eventName, e1.externalCustomerId, "",
            tsvDateTime(e1.timestamp), String(e1.timestamp.getTime()), String(e1.ingestedAt.getTime()), tsvString(e1.propertiesJson),
            "pending", "", String(2n ** 42n - 1n - BigInt(e1.ingestedAt.getTime()))
          ])
        )
        // ...and its key, as insertEvents writes it after the event
        yield* raw.insertTsv(
          "t",
          "event_keys",
          ["tenant_id", "environment_id", "event_id", "timestamp_ms", "ingested_at_ms", "version"],
          tsvLine([
            scope.tenantId, scope.environmentId, e1.eventId, String(e1.timestamp.getTime()), String(e1.ingestedAt.getTime()),
            String(2n ** 42n - 1n - BigInt(e1.ingestedAt.getTime()))
          ])
        )
        const duplicateReads = () => Metric.value(Metrics.eventStoreDuplicateReadsTotal).pipe(Effect.map((s) => s.count))
        const check = Effect.gen(function* () {
          const q = { scope, windowStart: T, windowEnd: minute(60), ingestedBefore: minute(24 * 60), meterIds: ["mtr_a"], pageSize: 10 }
          const all = Chunk.toReadonlyArray(yield* Stream.runCollect(store.aggregateBillable(q)))
          expect(all.map((g) => [g.customerId, g.quantity, g.eventCount])).toEqual([["cust_a", "3", 1]])
          // the late copy must not look like a late row or a delta
          expect(yield* Stream.runCollect(store.aggregateBillable({ ...q, ingestedAfter: minute(100) })).pipe(Effect.map(Chunk.size))).toBe(0)
          expect(yield* store.windowsWithLateRows({ scope, ingestedAfter: minute(100), ingestedBefore: minute(300), windowMinutes: 60, meterIds: ["mtr_a"] })).toEqual([])
          const events = (yield* store.listEvents({ scope, limit: 10 })).events
          expect(events.map((e) => e.propertiesJson)).toEqual(['{"copy":1}'])
        })
        // the audit saw the duplicate (two rows, one pair): both window reads took the exact path
        const before = yield* duplicateReads()
        yield* check
        expect((yield* duplicateReads()) - before).toBe(2)
        yield* store.updateEventStatus(scope, [{ eventId: "evt-race", customerId: "cust_1", status: "processed", error: null }])
        const afterUpdate = (yield* store.listEvents({ scope, limit: 10 })).events
        expect(afterUpdate.map((e) => [e.propertiesJson, e.status, e.customerId])).toEqual([['{"copy":1}', "processed", "cust_1"]])
        // merges keep the same copies the reads chose
        yield* raw.command("t", new Sql("OPTIMIZE TABLE events_processed FINAL"))
        const left = yield* raw.query("t", sql`SELECT toString(qty_billable) AS q FROM events_processed WHERE tenant_id = ${scope.tenantId}`)
        expect(left.map((r) => normalize(String(r["q"])))).toEqual(["3"])
        yield* raw.command("t", new Sql("OPTIMIZE TABLE events FINAL"))
        const evs = yield* raw.query("t", sql`SELECT properties, status FROM events WHERE tenant_id = ${scope.tenantId} ORDER BY properties`)
        // the two copies have different timestamps (different sort keys), so both rows stay; the
        // first copy (updated) is the one with the status update
        expect(evs).toEqual([{ properties: '{"copy":1}', status: "processed" }, { properties: '{"copy":2}', status: "pending" }])
        // merged to one row per pair: the audit passes and the plain read gives the same answer
        const merged = yield* duplicateReads()
        yield* check
        expect(yield* duplicateReads()).toBe(merged)
      }).pipe(Effect.scoped)
    )

    it.live("a copy written around ingest after a window's first read is no delta beside a genuine late row; the full read counts it once", () =>
      Effect.gen(function* () {
        yield* Layer.build(backend.store(backend.database)) // migrated
        const raw = yield* backend.client(backend.database)
        const store = fromClient(raw)
        const scope = freshScope()
        const T = new Date("2025-06-01T10:00:00.000Z")
        const minute = (n: number) => new Date(T.getTime() + n * 60_000)
        const counted = processedRow(scope, { eventId: "evt-counted", timestamp: minute(5), ingestedAt: minute(61), qtyBillable: "2.5" })
        yield* store.insertProcessed([counted, processedRow(scope, { eventId: "evt-other", timestamp: minute(9), ingestedAt: minute(61), qtyBillable: "4" })])
        const q = { scope, windowStart: T, windowEnd: minute(60), meterIds: ["mtr_a"], pageSize: 10 }
        const read = (over: { readonly ingestedAfter?: Date; readonly ingestedBefore: Date }) =>
          Stream.runCollect(store.aggregateBillable({ ...q, ...over })).pipe(
            Effect.map((c) => Chunk.toReadonlyArray(c).map((g) => [g.customerId, g.quantity, g.eventCount] as const))
          )
        // the window's first read (what a first pass ledgers)
        expect(yield* read({ ingestedBefore: minute(100) })).toEqual([["cust_a", O.format(O.sum(["2.5", "4"])), 2]])
        // then a copy of evt-counted lands straight in ClickHouse, same instant, stamped later (as a
        // racing writer's insert applied after it gave up, or a hand-written row) ...
        yield* raw.insertTsv(
          "t",
          "events_processed",
          ["tenant_id", "environment_id", "event_id", "meter_id", "customer_id", "event_name", "timestamp", "timestamp_ms", "ingested_at_ms", "qty_total", "qty_billable", "version"],
          tsvLine([
            scope.tenantId, scope.environmentId, counted.eventId, counted.meterId, counted.customerId, counted.eventName,
            tsvDateTime(counted.timestamp), String(counted.timestamp.getTime()), String(minute(120).getTime()), "2.5", "2.5",
            String(2n ** 42n - 1n - BigInt(minute(120).getTime()))
          ])
        )
        // ... beside a genuine late row of the same window
        yield* store.insertProcessed([processedRow(scope, { eventId: "evt-late", timestamp: minute(30), ingestedAt: minute(125), qtyBillable: "0.75" })])
        // the delta read (what the next pass ledgers) holds the late row only; the full read counts every event once
        expect(yield* read({ ingestedAfter: minute(100), ingestedBefore: minute(200) })).toEqual([["cust_a", O.format(O.sum(["0.75"])), 1]])
        expect(yield* read({ ingestedBefore: minute(200) })).toEqual([["cust_a", O.format(O.sum(["2.5", "4", "0.75"])), 3]])
      }).pipe(Effect.scoped)
    )

    it.live("a claim left without its rows (writer died in between) is completed by the next copy, at the claimed instant", () =>
      Effect.gen(function* () {
        yield* Layer.build(backend.store(backend.database)) // migrated
        const raw = yield* backend.client(backend.database)
        const store = fromClient(raw)
        const scope = freshScope()
        const T = new Date("2025-05-01T10:00:00.000Z")
        const minute = (n: number) => new Date(T.getTime() + n * 60_000)
        const claimedAt = minute(5)
        // the first copy's writer wrote its claim and died before writing the row
        yield* raw.insertTsv(
          "t",
          "processed_keys",
          ["tenant_id", "environment_id", "event_id", "meter_id", "timestamp_ms", "ingested_at_ms", "version"],
          tsvLine([
            scope.tenantId, scope.environmentId, "evt-crash", "mtr_a", String(claimedAt.getTime()), String(minute(61).getTime()),
            String(2n ** 42n - 1n - BigInt(minute(61).getTime()))
          ])
        )
        // the client's retry carries another timestamp (next hour) and is ingested later
        const retry = processedRow(scope, { eventId: "evt-crash", timestamp: minute(70), ingestedAt: minute(130), qtyBillable: "4" })
        yield* store.insertProcessed([retry])
        // a third copy finds claim and row: nothing more is written
        yield* store.insertProcessed([{ ...retry, timestamp: minute(200), ingestedAt: minute(140), qtyBillable: "9" }])
        const hour = (start: Date, ingestedAfter?: Date) =>
          Stream.runCollect(
            store.aggregateBillable({
              scope, windowStart: start, windowEnd: new Date(start.getTime() + 3_600_000), ingestedAfter,
              ingestedBefore: minute(24 * 60), meterIds: ["mtr_a"], pageSize: 10
            })
          ).pipe(Effect.map((c) => Chunk.toReadonlyArray(c).map((g) => [g.customerId, g.quantity, g.eventCount])))
        expect(yield* hour(T)).toEqual([["cust_a", "4", 1]])
        expect(yield* hour(minute(60))).toEqual([])
        expect(yield* hour(minute(180))).toEqual([])
        // the repaired row carries the retry's ingestion stamp: a delta read after the claim finds it
        expect(yield* hour(T, minute(100))).toEqual([["cust_a", "4", 1]])
        expect(yield* store.windowsWithLateRows({ scope, ingestedAfter: minute(100), ingestedBefore: minute(300), windowMinutes: 60, meterIds: ["mtr_a"] })).toEqual([T])
        const stored = yield* raw.query("t", sql`SELECT timestamp_ms, ingested_at_ms FROM events_processed WHERE tenant_id = ${scope.tenantId}`)
        expect(stored.map((r) => [Number(r["timestamp_ms"]), Number(r["ingested_at_ms"])])).toEqual([[claimedAt.getTime(), minute(130).getTime()]])
      }).pipe(Effect.scoped)
    )

    it.live("a resend processed while the first copy is still pending counts at the first copy's instant", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        const scope = freshScope()
        const T = new Date("2025-07-01T10:00:00.000Z")
        const minute = (n: number) => new Date(T.getTime() + n * 60_000)
        // the first copy arrived before its customer: stored pending, no processed rows
        yield* store.insertEvents([storedEvent(scope, { eventId: "evt-p", timestamp: minute(10), ingestedAt: minute(11) })])
        // the customer exists when the resend (next hour) arrives: the ClickHouse ingestor writes
        // processed rows first, then learns the event is a duplicate
        yield* store.insertProcessed([processedRow(scope, { eventId: "evt-p", timestamp: minute(70), ingestedAt: minute(71), qtyBillable: "2" })])
        expect(yield* store.insertEvents([storedEvent(scope, { eventId: "evt-p", timestamp: minute(70), ingestedAt: minute(71) })])).toEqual([])
        // the pending first copy is processed
        yield* store.insertProcessed([processedRow(scope, { eventId: "evt-p", timestamp: minute(10), ingestedAt: minute(72), qtyBillable: "2" })])
        const hour = (start: Date) =>
          Stream.runCollect(
            store.aggregateBillable({
              scope, windowStart: start, windowEnd: new Date(start.getTime() + 3_600_000),
              ingestedBefore: minute(24 * 60), meterIds: ["mtr_a"], pageSize: 10
            })
          ).pipe(Effect.map((c) => Chunk.toReadonlyArray(c).map((g) => [g.quantity, g.eventCount])))
        expect(yield* hour(T)).toEqual([["2", 1]])
        expect(yield* hour(minute(60))).toEqual([])
      }).pipe(Effect.provide(backend.store(backend.database)))
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
        // The store's own refusal (escape.ts), before anything reaches ClickHouse: its message is
        // on the EventStoreError's cause.
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        const cause = (error as { readonly cause?: unknown } | undefined)?.cause
        expect(cause instanceof Error ? cause.message : String(error)).toContain("more than 12 fractional digits: 0.0000000000001")
      }).pipe(Effect.provide(backend.store(backend.database)))
    )
  })
}

withClickHouse((url) => {
  const database = resolveConnection({ url, database: clickHouseTestDatabase(url) }).database
  eventStoreContract("EventStore contract: ClickHouse", ClickHouseEventStore.layerWith({ url, database }))
  clickHouseChecks({
    label: "server",
    database,
    client: (db) => makeClient(resolveConnection({ url, database: db }), db),
    store: (db) => ClickHouseEventStore.layerWith({ url, database: db })
  })

  describe("ClickHouse server specifics", () => {
    it.live("the layer reads FLEXPRICE_CLICKHOUSE_URL and FLEXPRICE_CLICKHOUSE_DATABASE", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        expect(store.backend).toBe("clickhouse")
        yield* store.ping()
      }).pipe(
        Effect.provide(
          ClickHouseEventStore.layer.pipe(
            Layer.provide(
              Layer.setConfigProvider(
                ConfigProvider.fromMap(
                  new Map([
                    ["FLEXPRICE_CLICKHOUSE_URL", url],
                    ["FLEXPRICE_CLICKHOUSE_DATABASE", database]
                  ])
                )
              )
            )
          )
        )
      )
    )

    it.live("opening the store is traced as EventStore.clickhouse.make over ClickHouseMigrator.migrate; a ping as EventStore.ping", () =>
      Effect.gen(function* () {
        const telemetry = yield* TelemetryTest
        const store = yield* ClickHouseEventStore.make({ url, database })
        yield* store.ping()
        const spans = yield* telemetry.spans
        const migrate = spans.filter((s) => s.name === "ClickHouseMigrator.migrate")
        expect(migrate).toHaveLength(1)
        expect(SpanTree.path(migrate[0]!, spans)).toEqual(["EventStore.clickhouse.make", "ClickHouseMigrator.migrate"])
        expect(yield* telemetry.spansNamed("EventStore.ping")).toHaveLength(1)
      }).pipe(Effect.scoped, Effect.provide(Telemetry.layerTest))
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
  })
})

withChdb((path) => {
  eventStoreContract("EventStore contract: ClickHouse on chdb", chdbEventStoreLayer(path, CLICKHOUSE_TEST_DATABASE))
  clickHouseChecks({
    label: "chdb",
    database: CLICKHOUSE_TEST_DATABASE,
    client: (db) => Effect.try({ try: () => chdbClient(path, db), catch: (cause) => new EventStoreError({ backend: "clickhouse", operation: "connect", cause }) }),
    store: (db) => chdbEventStoreLayer(path, db)
  })
})

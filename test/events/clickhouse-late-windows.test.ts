/**
 * The ClickHouse planning read (EventStore.windowsWithLateRows, `clickhouse/LateWindows.ts`) over
 * `processed_arrivals` (migration 0005), on the 18.16 server and on chdb (a current engine):
 * - rows go through the real ingest (`insertProcessed`): a late row of any age is found, a pair
 *   whose first copy came before the range is not, whatever instant its resend carries;
 * - a database migrated before 0005 gets the arrivals of its existing rows (the backfill);
 * - server: the rows the statement reads are bounded by the range, not by the tenant's history
 *   (`statistics.rows_read` of the same statement run with FORMAT JSON).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fromClient } from "../../src/events/ClickHouseEventStore.js"
import { type ChClient, makeClient, resolveConnection } from "../../src/events/clickhouse/Client.js"
import { ClickHouseMigrator, defaultMigrationsDir } from "../../src/events/clickhouse/Migrator.js"
import { Sql, tsvDateTime, tsvLine, tsvString } from "../../src/events/clickhouse/escape.js"
import { EventStoreError, type ProcessedEvent } from "../../src/events/EventStore.js"
import { chdbClient, withChdb } from "../support/chdb.js"
import { withClickHouse } from "../support/clickhouse.js"
import { freshScope, processedRow } from "./EventStoreContract.js"

const HOUR = 3_600_000
const DAY = 24 * HOUR
const T = new Date("2025-09-01T10:00:00.000Z")
const minute = (n: number) => new Date(T.getTime() + n * 60_000)

type Connect = (database: string) => Effect.Effect<ChClient, EventStoreError, Scope.Scope>

/** A fresh database migrated with the files of `dir` (all of them by default), dropped with the scope. */
const migratedDb = (connect: Connect, dir?: string) =>
  Effect.gen(function* () {
    const database = `flexprice_late_${Date.now()}_${process.pid}_${Math.floor(Math.random() * 1e6)}`
    const bootstrap = yield* connect("default")
    const client = yield* connect(database)
    yield* Effect.addFinalizer(() => Effect.orDie(bootstrap.command("t", new Sql(`DROP DATABASE IF EXISTS ${database}`))))
    yield* ClickHouseMigrator({ bootstrap, client, dir })
    return { bootstrap, client, database }
  })

const PROCESSED_COLUMNS = [
  "tenant_id", "environment_id", "event_id", "meter_id", "customer_id", "event_name",
  "timestamp", "timestamp_ms", "ingested_at_ms", "qty_total", "qty_billable", "version"
] as const

/** Rows as a store before 0005 wrote them (no arrival), copies included. */
const writeLegacy = (client: ChClient, rows: ReadonlyArray<ProcessedEvent>) =>
  client.insertTsv(
    "t",
    "events_processed",
    PROCESSED_COLUMNS,
    rows
      .map((r) =>
        tsvLine([
          tsvString(r.tenantId), tsvString(r.environmentId), tsvString(r.eventId), tsvString(r.meterId), tsvString(r.customerId),
          tsvString(r.eventName), tsvDateTime(r.timestamp), String(r.timestamp.getTime()), String(r.ingestedAt.getTime()),
          r.qtyTotal, r.qtyBillable, String(2n ** 42n - 1n - BigInt(r.ingestedAt.getTime()))
        ])
      )
      .join("")
  )

const lateWindowsSuite = (label: string, connect: Connect) =>
  describe(`ClickHouse late windows over arrivals (${label})`, () => {
    it.live("a late row a month old is found; a pair first ingested before the range is not, whatever instant its resend carries", () =>
      Effect.gen(function* () {
        const { client } = yield* migratedDb(connect)
        const store = fromClient(client)
        const scope = freshScope()
        const monthOld = new Date(T.getTime() - 30 * DAY + 17 * 60_000)
        yield* store.insertProcessed([
          // first copy before the range (ingested at minute 50)...
          processedRow(scope, { eventId: "evt-early", timestamp: minute(10), ingestedAt: minute(50) }),
          // ...a row of the range's own hour, on another meter
          processedRow(scope, { eventId: "evt-b", meterId: "mtr_b", timestamp: minute(130), ingestedAt: minute(140) })
        ])
        yield* store.insertProcessed([
          // its resend in the range, at another instant (two hours later): not new
          processedRow(scope, { eventId: "evt-early", timestamp: minute(130), ingestedAt: minute(150) }),
          // a late row 30 days old, first ingested in the range
          processedRow(scope, { eventId: "evt-old", timestamp: monthOld, ingestedAt: minute(160) }),
          // a row ingested on the range's upper bound (inside) and one just after it (outside)
          processedRow(scope, { eventId: "evt-edge", timestamp: minute(-50), ingestedAt: minute(300) }),
          processedRow(scope, { eventId: "evt-after", timestamp: minute(-110), ingestedAt: new Date(minute(300).getTime() + 1) })
        ])
        const late = (meterIds: ReadonlyArray<string>, windowMinutes = 60) =>
          Effect.map(
            store.windowsWithLateRows({ scope, ingestedAfter: minute(100), ingestedBefore: minute(300), windowMinutes, meterIds }),
            (ds) => ds.map((d) => d.toISOString())
          )
        expect(yield* late(["mtr_a"])).toEqual(["2025-08-02T10:00:00.000Z", "2025-09-01T09:00:00.000Z"])
        expect(yield* late(["mtr_a", "mtr_b"])).toEqual(["2025-08-02T10:00:00.000Z", "2025-09-01T09:00:00.000Z", "2025-09-01T12:00:00.000Z"])
        expect(yield* late(["mtr_a"], 15)).toEqual(["2025-08-02T10:15:00.000Z", "2025-09-01T09:00:00.000Z"])
        // a first run (from the epoch) sees every first copy, the early one included, and no resend
        const all = yield* store.windowsWithLateRows({ scope, ingestedAfter: new Date(0), ingestedBefore: minute(400), windowMinutes: 60, meterIds: ["mtr_a"] })
        expect(all.map((d) => d.toISOString())).toEqual(["2025-08-02T10:00:00.000Z", "2025-09-01T08:00:00.000Z", "2025-09-01T09:00:00.000Z", "2025-09-01T10:00:00.000Z"])
      }).pipe(Effect.scoped)
    )

    it.live("an insert that fails after the claim leaves no row without its arrival: the next copy repairs both and the window is found", () =>
      Effect.gen(function* () {
        const { client } = yield* migratedDb(connect)
        const scope = freshScope()
        // the writer dies at its arrivals insert (after the claim): nothing after it may have landed
        const dying = fromClient({
          ...client,
          insertTsv: (op, table, columns, data) =>
            table === "processed_arrivals" ? Effect.fail(new EventStoreError({ backend: "clickhouse", operation: op, cause: new Error("killed") })) : client.insertTsv(op, table, columns, data)
        })
        const row = processedRow(scope, { eventId: "evt-crash", timestamp: minute(10), ingestedAt: minute(150) })
        expect((yield* Effect.flip(dying.insertProcessed([row]))).operation).toBe("insertProcessed")
        const store = fromClient(client)
        // the client's retry, ingested later
        yield* store.insertProcessed([{ ...row, ingestedAt: minute(170) }])
        const late = (after: number) =>
          Effect.map(
            store.windowsWithLateRows({ scope, ingestedAfter: minute(after), ingestedBefore: minute(300), windowMinutes: 60, meterIds: ["mtr_a"] }),
            (ds) => ds.map((d) => d.toISOString())
          )
        expect(yield* late(100)).toEqual(["2025-09-01T10:00:00.000Z"])
        // found by the run whose range holds the repair (the claim's own stamp, 150, is already behind it)
        expect(yield* late(160)).toEqual(["2025-09-01T10:00:00.000Z"])
      }).pipe(Effect.scoped)
    )

    it.live("a database migrated before 0005 gets the arrivals of its rows: late windows as before the migration", () =>
      Effect.gen(function* () {
        const dir = mkdtempSync(join(tmpdir(), "ch-mig-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
        const all = defaultMigrationsDir()
        for (const f of readdirSync(all)) if (/^000[1-4]_/.test(f)) copyFileSync(join(all, f), join(dir, f))
        const { bootstrap, client } = yield* migratedDb(connect, dir)
        const scope = freshScope()
        const first = processedRow(scope, { eventId: "evt-1", timestamp: minute(5), ingestedAt: minute(50) })
        // separate inserts: a current engine applies the merge rule within one insert (optimize_on_insert)
        yield* writeLegacy(client, [first])
        // its copy at the same instant, ingested in the range (an insert applied late): not new
        yield* writeLegacy(client, [{ ...first, ingestedAt: minute(150) }])
        yield* writeLegacy(client, [processedRow(scope, { eventId: "evt-2", timestamp: new Date(T.getTime() - 20 * DAY), ingestedAt: minute(200) })])
        expect(yield* ClickHouseMigrator({ bootstrap, client })).toEqual([5])
        const store = fromClient(client)
        const late = yield* store.windowsWithLateRows({ scope, ingestedAfter: minute(100), ingestedBefore: minute(300), windowMinutes: 60, meterIds: ["mtr_a"] })
        expect(late.map((d) => d.toISOString())).toEqual(["2025-08-12T10:00:00.000Z"])
      }).pipe(Effect.scoped)
    )
  })

withClickHouse((url) => {
  const connect: Connect = (db) => makeClient(resolveConnection({ url, database: db }), db)
  lateWindowsSuite("server", connect)

  describe("ClickHouse late windows: rows read (server)", () => {
    it.live("an hourly run reads the rows of its range, not the tenant's history", () =>
      Effect.gen(function* () {
        const { client, database } = yield* migratedDb(connect)
        const scope = freshScope()
        const HISTORY = 1_000_000
        // a month of history for the meter, all ingested before the range (server-side, as ingest writes it)
        const src = `SELECT number AS n, ${T.getTime() - 30 * DAY} + intDiv(number * ${30 * DAY}, ${HISTORY}) AS ts, ts + 1000 AS ing
          FROM system.numbers LIMIT ${HISTORY}`
        const s = `'${scope.tenantId}', '${scope.environmentId}'`
        yield* client.command("t", new Sql(`INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name,
            timestamp, timestamp_ms, ingested_at_ms, qty_total, qty_billable, version)
          SELECT ${s}, concat('h_', toString(n)), 'mtr_a', 'cust_a', 'api_call', toDateTime(intDiv(ts, 1000)), ts, ing,
            toDecimal128(1, 12), toDecimal128(1, 12), ${2n ** 42n - 1n} - ing FROM (${src})`))
        yield* client.command("t", new Sql(`INSERT INTO processed_arrivals (tenant_id, environment_id, meter_id, ingested_at_ms, event_id, timestamp_ms)
          SELECT ${s}, 'mtr_a', ing, concat('h_', toString(n)), ts FROM (${src})`))
        const recorded: Array<Sql> = []
        const store = fromClient({ ...client, query: (op, q) => Effect.zipRight(Effect.sync(() => recorded.push(q)), client.query(op, q)) })
        // the hour's rows, one of them 20 days old
        yield* store.insertProcessed([
          processedRow(scope, { eventId: "evt-now", timestamp: minute(0), ingestedAt: minute(70) }),
          processedRow(scope, { eventId: "evt-old", timestamp: new Date(T.getTime() - 20 * DAY), ingestedAt: minute(80) })
        ])
        recorded.length = 0
        const late = yield* store.windowsWithLateRows({ scope, ingestedAfter: minute(60), ingestedBefore: minute(120), windowMinutes: 60, meterIds: ["mtr_a"] })
        expect(late.map((d) => d.toISOString())).toEqual(["2025-08-12T10:00:00.000Z", "2025-09-01T10:00:00.000Z"])
        expect(recorded.length).toBe(1)
        const response = yield* Effect.promise(() =>
          fetch(`${url.replace(/\/+$/, "")}/?database=${database}`, { method: "POST", body: `${recorded[0]!.text} FORMAT JSON` }).then((r) => r.json())
        )
        const rowsRead = Number((response as { statistics: { rows_read: number } }).statistics.rows_read)
        // a few index granules (8,192 rows) around the range's arrivals and at their seconds, where the
        // history is HISTORY rows in each table (the read before 0005: more than 2 × HISTORY)
        expect(rowsRead).toBeGreaterThan(0)
        expect(rowsRead).toBeLessThan(HISTORY / 10)
      }).pipe(Effect.scoped),
      120_000
    )
  })
})

withChdb((path) =>
  lateWindowsSuite("chdb", (db) =>
    Effect.try({ try: () => chdbClient(path, db), catch: (cause) => new EventStoreError({ backend: "clickhouse", operation: "connect", cause }) })
  )
)

/**
 * migrations/0013 on a database that already has a ledger: every batch is copied into the
 * monthly partitions unchanged, the indexes and the exactly-once key come back on the
 * partitioned table, and a duplicate key is still refused. migrations/0015: the `sending` mark is
 * a HOT update, on the months that exist and on those `flexprice_ledger_partitions` creates.
 * PGlite (in process) and PostgreSQL.
 */
import { PGlite } from "@electric-sql/pglite"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import { describe, expect, it } from "vitest"
import { migrationsDir } from "../../src/db/Migrations.js"
import { forEachBackend, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"

const files = fs
  .readdirSync(migrationsDir)
  .filter((f) => /^\d+_.*\.sql$/.test(f))
  .sort()
const ARCHIVE_MIGRATION = 13
const numberOf = (f: string) => Number(f.split("_")[0])

type Query = (text: string) => Promise<ReadonlyArray<Record<string, unknown>>>

const withDatabase = async <A>(backend: string, body: (q: Query) => Promise<A>): Promise<A> => {
  if (backend === "pglite") {
    const db = new PGlite()
    try {
      return await body(async (text) => {
        const results = await db.exec(text)
        return (results[results.length - 1]?.rows ?? []) as ReadonlyArray<Record<string, unknown>>
      })
    } finally {
      await db.close()
    }
  }
  const database = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
  try {
    return await Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(Layer.build(PgClient.layer({ url: Redacted.make(database.url), maxConnections: 1 })), (ctx) =>
          Effect.promise(() =>
            body(async (text) => {
              const r = await Effect.runPromise(Effect.either(Effect.provide(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(text)), ctx)))
              if (r._tag === "Left") throw new Error(`${r.left.message}: ${String(r.left.cause)}`)
              return r.right as ReadonlyArray<Record<string, unknown>>
            })
          )
        )
      )
    )
  } finally {
    await database.drop()
  }
}

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`0013 ledger partitions migration (${backend})`, () => {
    it("copies an existing ledger into monthly partitions with its keys and indexes", async () => {
      await withDatabase(backend, async (q) => {
        // the migrator's own bookkeeping table, which migrations may refer to (0012 revokes on it)
        await q(`CREATE TABLE effect_sql_migrations (migration_id integer PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), name text NOT NULL)`)
        for (const f of files.filter((f) => numberOf(f) < ARCHIVE_MIGRATION)) await q(fs.readFileSync(`${migrationsDir}/${f}`, "utf8"))
        // 90 batches over ~three months, with exact quantities that a copy must keep to the digit
        await q(`INSERT INTO stripe_sync_batches (id, tenant_id, environment_id, customer_id, meter_id, event_type, window_start,
            window_end, sequence, aggregated_quantity, sent_quantity, event_count, identifier, sync_status, watermark)
          SELECT 'ssb_' || g, 't', 'e', 'c' || (g % 3), 'm', 'ev', timestamptz '2026-07-20T00:00Z' + g * interval '1 day',
            timestamptz '2026-07-20T01:00Z' + g * interval '1 day', 1, 1.000000000001 * g, g, g, 'id' || g,
            CASE WHEN g % 2 = 0 THEN 'synced' ELSE 'pending' END, now()
          FROM generate_series(1, 90) g`)
        const snapshot = `SELECT id, window_start, aggregated_quantity::text AS q, sent_quantity::text AS s, sync_status
          FROM stripe_sync_batches ORDER BY id`
        const before = await q(snapshot)
        for (const f of files.filter((f) => numberOf(f) >= ARCHIVE_MIGRATION)) await q(fs.readFileSync(`${migrationsDir}/${f}`, "utf8"))
        expect(await q(snapshot)).toEqual(before)
        // 0015's generated column on the copied rows: `sending` would read `pending`, others themselves
        expect(await q(`SELECT sync_status, queue_status, count(*)::int AS n FROM stripe_sync_batches GROUP BY 1, 2 ORDER BY 1`)).toEqual([
          { sync_status: "pending", queue_status: "pending", n: 45 },
          { sync_status: "synced", queue_status: "synced", n: 45 }
        ])
        const parts = await q(`SELECT c.relname AS name
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'stripe_sync_batches'::regclass`)
        const names = parts.map((p) => p["name"])
        for (const m of ["202607", "202608", "202609", "202610"]) expect(names).toContain(`stripe_sync_batches_p${m}`)
        expect(names).toContain("stripe_sync_batches_default")
        const indexes = (await q(`SELECT indexname FROM pg_indexes WHERE tablename = 'stripe_sync_batches' ORDER BY 1`)).map((r) => r["indexname"])
        expect(indexes).toEqual(
          expect.arrayContaining([
            "stripe_sync_batches_pkey",
            "stripe_sync_batches_carry_idx",
            "stripe_sync_batches_open_idx",
            "stripe_sync_batches_window_idx",
            "stripe_sync_batches_reevaluate_idx"
          ])
        )
        const duplicate = q(`INSERT INTO stripe_sync_batches (id, tenant_id, environment_id, customer_id, meter_id, event_type,
            window_start, window_end, sequence, aggregated_quantity, event_count, identifier, sync_status, watermark)
          SELECT 'ssb_dup', tenant_id, environment_id, customer_id, meter_id, event_type, window_start, window_end, sequence,
            1, 1, identifier, 'pending', now() FROM stripe_sync_batches WHERE id = 'ssb_45'`)
        await expect(duplicate).rejects.toThrow(/duplicate key|unique/)
      })
    }, 180_000) // every migration on a fresh in-process PGlite: slow on a loaded machine
  })

  describe(`0015 HOT marks (${backend})`, () => {
    const batches = (prefix: string, at: string, n: number) => `INSERT INTO stripe_sync_batches (id, tenant_id, environment_id,
        customer_id, meter_id, event_type, window_start, window_end, sequence, aggregated_quantity, event_count, identifier,
        sync_status, watermark)
      SELECT '${prefix}' || g, 't', 'e', 'c' || g, 'm', 'ev', ${at}, ${at} + interval '1 hour', 1, g, 1, '${prefix}' || g, 'pending', now()
      FROM generate_series(1, ${n}) g`
    // In one transaction: pg_stat_get_xact_* count this transaction's row updates of one partition, HOT ones apart.
    const markSending = (prefix: string, partition: string) => `DO $$ BEGIN
        UPDATE stripe_sync_batches SET sync_status = 'sending', first_sent_at = now(), updated_at = now() WHERE id LIKE '${prefix}%';
        INSERT INTO hot_check SELECT pg_stat_get_xact_tuples_updated('${partition}'::regclass), pg_stat_get_xact_tuples_hot_updated('${partition}'::regclass);
      END $$`
    const partitionOf = async (q: Query, id: string) => String((await q(`SELECT tableoid::regclass::text AS p FROM stripe_sync_batches WHERE id = '${id}'`))[0]!["p"])

    it("marks pending batches sending in place, in an existing month and in one created later", async () => {
      await withDatabase(backend, async (q) => {
        await q(`CREATE TABLE effect_sql_migrations (migration_id integer PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), name text NOT NULL)`)
        for (const f of files) await q(fs.readFileSync(`${migrationsDir}/${f}`, "utf8"))
        await q(`CREATE TABLE hot_check (updated bigint, hot bigint)`)

        await q(batches("now_", "date_trunc('hour', now())", 40))
        const current = await partitionOf(q, "now_1")
        expect(current).toMatch(/^stripe_sync_batches_p\d{6}$/)
        await q(markSending("now_", current))
        expect(await q(`SELECT updated::int, hot::int FROM hot_check`)).toEqual([{ updated: 40, hot: 40 }])
        expect(await q(`SELECT DISTINCT sync_status, queue_status FROM stripe_sync_batches WHERE id LIKE 'now_%'`)).toEqual([
          { sync_status: "sending", queue_status: "pending" }
        ])
        await q(`UPDATE stripe_sync_batches SET sync_status = 'synced' WHERE id LIKE 'now_%'`)
        expect(await q(`SELECT DISTINCT queue_status FROM stripe_sync_batches WHERE id LIKE 'now_%'`)).toEqual([{ queue_status: "synced" }])

        // a month with no partition yet: the default partition holds it until the upkeep creates the month
        const later = "date_trunc('month', now()) + interval '8 months' + interval '3 days'"
        await q(batches("later_", later, 40))
        expect(await partitionOf(q, "later_1")).toBe("stripe_sync_batches_default")
        await q(`SELECT * FROM flexprice_ledger_partitions(now(), ${later}, timestamptz '2000-01-01')`)
        const created = await partitionOf(q, "later_1")
        expect(created).toMatch(/^stripe_sync_batches_p\d{6}$/)
        expect(await q(`SELECT count(*)::int AS n, sum(aggregated_quantity)::text AS total FROM ${created}`)).toEqual([{ n: 40, total: "820.000000000000" }])
        expect(await q(`SELECT reloptions::text AS o FROM pg_class WHERE relname = '${created}'`)).toEqual([{ o: "{fillfactor=50}" }])
        await q(`TRUNCATE hot_check`)
        await q(markSending("later_", created))
        expect(await q(`SELECT updated::int, hot::int FROM hot_check`)).toEqual([{ updated: 40, hot: 40 }])
        expect(await q(`SELECT DISTINCT queue_status FROM stripe_sync_batches WHERE id LIKE 'later_%'`)).toEqual([{ queue_status: "pending" }])
      })
    }, 180_000)
  })
})

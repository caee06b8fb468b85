/**
 * The ingest write on PostgreSQL tables: a batch's events and the processed rows of the events
 * stored now, in one statement after the data is on the server (issue #16 item 4).
 *
 * - PostgreSQL server (`copyBatch`, NOT wired in: measured 2.4× slower than the two COPY +
 *   INSERT pairs in PgEventStore on 2026-12-02, cause not yet found — suspect the join of two CTE
 *   scans without row estimates): the batch is COPYed (events and processed rows together, told apart by
 *   `kind`) into one session temp table, then ONE `INSERT … ON CONFLICT DO NOTHING RETURNING`
 *   statement writes both tables: processed rows are joined to the RETURNING of the events
 *   insert, so only events stored now get processed rows (a re-sent event adds nothing).
 * - PGlite: the same one statement over `unnest` arrays. PGlite's in-process
 *   `COPY … FROM '/dev/blob'` was measured slower than `unnest` on the same engine (BENCHMARKS.md,
 *   2026-12-02 ingest), so it is not used.
 *
 * Compared with an events insert followed by a processed insert, this saves a round trip per
 * batch (two on the server: one COPY instead of two) and sends tenant and environment once
 * instead of once per row.
 */
import type { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { copyIn, copyPayload, copyText } from "../db/PgCopy.js"
import { textArray } from "../db/SqlArrays.js"
import type { ProcessedEvent, StoredEvent } from "./EventStore.js"

/**
 * Session-local staging table for COPY (PostgreSQL server). Created on first use in each pooled
 * session; ON COMMIT DELETE ROWS empties it at the end of every transaction that touched it, and
 * the INSERT below also deletes what it read, so two batches in one transaction never mix. A
 * pooled session may serve several database roles over its life (row-level security switches
 * role per checkout), so the table is granted to every role when it is created. A temp table
 * sits outside row-level security: the INSERTs into the tenant tables are what the policies check.
 */
const STAGE_DDL = `DO $$ BEGIN
  IF to_regclass('pg_temp.ingest_batch_stage') IS NULL THEN
    CREATE TEMP TABLE ingest_batch_stage (
      kind "char", event_id text, event_name text, external_customer_id text, customer_id text,
      ts timestamptz, ingested_at timestamptz, properties text, status text, error text, meter_id text,
      qty_total numeric(38, 12), qty_billable numeric(38, 12)
    ) ON COMMIT DELETE ROWS;
    GRANT SELECT, INSERT, DELETE ON pg_temp.ingest_batch_stage TO PUBLIC;
  END IF;
END $$`

const STAGE_COLUMNS = [
  "kind", "event_id", "event_name", "external_customer_id", "customer_id", "ts", "ingested_at", "properties", "status", "error", "meter_id",
  "qty_total", "qty_billable"
] as const

const N = "\\N"

/** One batch: rows of one tenant environment. */
export interface IngestBatch {
  readonly tenantId: string
  readonly environmentId: string
  /** first copy per event id already kept */
  readonly events: ReadonlyArray<StoredEvent>
  /** first copy per (event id, meter id) already kept */
  readonly processed: ReadonlyArray<ProcessedEvent>
}

const stagePayload = (b: IngestBatch): Buffer =>
  copyPayload([
    ...b.events.map((e) => [
      "e", copyText(e.eventId), copyText(e.eventName), copyText(e.externalCustomerId), copyText(e.customerId),
      e.timestamp.toISOString(), e.ingestedAt.toISOString(), copyText(e.propertiesJson), copyText(e.status), copyText(e.error), N, N, N
    ]),
    ...b.processed.map((r) => [
      "p", copyText(r.eventId), copyText(r.eventName), N, copyText(r.customerId), r.timestamp.toISOString(), r.ingestedAt.toISOString(), N, N, N,
      copyText(r.meterId), r.qtyTotal, r.qtyBillable
    ])
  ])

/** COPY into the session's stage, then both inserts in one statement (inside a transaction). */
export const copyBatch = (sql: PgClient.PgClient, b: IngestBatch) =>
  Effect.gen(function* () {
    yield* sql.unsafe(STAGE_DDL)
    yield* copyIn("ingest_batch_stage", STAGE_COLUMNS, stagePayload(b))
    return yield* sql<{ eventId: string }>`WITH s AS (DELETE FROM ingest_batch_stage RETURNING *),
      ev AS (
        INSERT INTO events
          (tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, "timestamp", ingested_at, properties, status, error)
        SELECT ${b.tenantId}, ${b.environmentId}, event_id, event_name, external_customer_id, customer_id, ts, ingested_at,
          properties::json, status, error
        FROM s WHERE kind = 'e'
        ON CONFLICT (tenant_id, environment_id, event_id) DO NOTHING RETURNING event_id),
      pr AS (
        INSERT INTO events_processed
          (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
        SELECT ${b.tenantId}, ${b.environmentId}, s.event_id, s.meter_id, s.customer_id, s.event_name, s.ts, s.ingested_at,
          s.qty_total, s.qty_billable
        FROM s JOIN ev ON ev.event_id = s.event_id WHERE s.kind = 'p'
        ON CONFLICT (tenant_id, environment_id, event_id, meter_id) DO NOTHING)
      SELECT event_id FROM ev`
  })

/** Both inserts in one statement over one array per column (PGlite). */
export const unnestBatch = (sql: PgClient.PgClient, b: IngestBatch) => {
  const ev = b.events
  const pr = b.processed
  return sql<{ eventId: string }>`WITH ev AS (
      INSERT INTO events
        (tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, "timestamp", ingested_at, properties, status, error)
      SELECT ${b.tenantId}, ${b.environmentId}, t.event_id, t.event_name, t.external_customer_id, t.customer_id, t.ts, t.ingested_at,
        t.properties::json, t.status, t.error
      FROM unnest(${textArray(ev.map((e) => e.eventId))}::text[], ${textArray(ev.map((e) => e.eventName))}::text[],
                  ${textArray(ev.map((e) => e.externalCustomerId))}::text[], ${textArray(ev.map((e) => e.customerId))}::text[],
                  ${textArray(ev.map((e) => e.timestamp.toISOString()))}::timestamptz[], ${textArray(ev.map((e) => e.ingestedAt.toISOString()))}::timestamptz[],
                  ${textArray(ev.map((e) => e.propertiesJson))}::text[], ${textArray(ev.map((e) => e.status))}::text[],
                  ${textArray(ev.map((e) => e.error))}::text[])
        AS t(event_id, event_name, external_customer_id, customer_id, ts, ingested_at, properties, status, error)
      ON CONFLICT (tenant_id, environment_id, event_id) DO NOTHING RETURNING event_id),
    pr AS (
      INSERT INTO events_processed
        (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
      SELECT ${b.tenantId}, ${b.environmentId}, p.event_id, p.meter_id, p.customer_id, p.event_name, p.ts, p.ingested_at,
        p.qty_total, p.qty_billable
      FROM unnest(${textArray(pr.map((r) => r.eventId))}::text[], ${textArray(pr.map((r) => r.meterId))}::text[],
                  ${textArray(pr.map((r) => r.customerId))}::text[], ${textArray(pr.map((r) => r.eventName))}::text[],
                  ${textArray(pr.map((r) => r.timestamp.toISOString()))}::timestamptz[], ${textArray(pr.map((r) => r.ingestedAt.toISOString()))}::timestamptz[],
                  ${textArray(pr.map((r) => r.qtyTotal))}::numeric[], ${textArray(pr.map((r) => r.qtyBillable))}::numeric[])
        AS p(event_id, meter_id, customer_id, event_name, ts, ingested_at, qty_total, qty_billable)
      JOIN ev ON ev.event_id = p.event_id
      ON CONFLICT (tenant_id, environment_id, event_id, meter_id) DO NOTHING)
    SELECT event_id FROM ev`
}

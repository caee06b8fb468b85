/**
 * The ingest write on PostgreSQL tables: a batch's events and the processed rows of the events
 * stored now, in one statement after the data is on the server (issue #16 item 4).
 *
 * - PostgreSQL server: not used. A one-COPY + one-statement form (both tables from one staged
 *   COPY, processed rows joined to the events insert's RETURNING) measured 2.4× slower than the
 *   two COPY + INSERT pairs PgEventStore keeps (BENCHMARKS.md, 2026-12-02 ingest).
 * - PGlite: one statement over `unnest` arrays. PGlite's in-process
 *   `COPY … FROM '/dev/blob'` was measured slower than `unnest` on the same engine (BENCHMARKS.md,
 *   2026-12-02 ingest), so it is not used.
 *
 * Compared with an events insert followed by a processed insert, this saves a round trip per
 * batch (two on the server: one COPY instead of two) and sends tenant and environment once
 * instead of once per row.
 */
import type { PgClient } from "@effect/sql-pg"
import { textArray } from "../db/SqlArrays.js"
import type { ProcessedEvent, StoredEvent } from "./EventStore.js"

/** One batch: rows of one tenant environment. */
export interface IngestBatch {
  readonly tenantId: string
  readonly environmentId: string
  /** first copy per event id already kept */
  readonly events: ReadonlyArray<StoredEvent>
  /** first copy per (event id, meter id) already kept */
  readonly processed: ReadonlyArray<ProcessedEvent>
}

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

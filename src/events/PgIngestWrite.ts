/**
 * The ingest write on PostgreSQL tables (PGlite and a PostgreSQL server): a batch's events, the
 * processed rows of those stored now and the pending rows of those without a customer, in ONE
 * statement over one array per column (`unnest`), customers resolved inside it (issue #16 item 4).
 *
 * Measured and not used (BENCHMARKS.md, ingest, 2026-12-02): on a server, COPY into staging
 * tables then INSERT … SELECT (two COPY + INSERT pairs, or one COPY + one statement) — its round
 * trips cost more than COPY saved; on PGlite, in-process `COPY … FROM '/dev/blob'`, slower than
 * `unnest` on the same engine.
 */
import type { PgClient } from "@effect/sql-pg"
import { textArray } from "../db/SqlArrays.js"
import type { ResolvedEvent, ResolvingBatch } from "./EventStore.js"

/**
 * The ingest write with the customer lookup inside it (both backends): events LEFT JOIN
 * customers, then the processed rows of the events stored now that found a customer, and the
 * pending rows of those that did not — one statement, so one round trip where a lookup, a write
 * and a pending insert took three, and no transaction of its own. Tenant, environment and the
 * ingest stamp are sent once; a processed row takes its customer, name and time from the event
 * row just stored, so only (event id, meter id, quantity) travel per processed row. On a PostgreSQL
 * server the statement also takes the watermark's shared lock and its stamp (IngestStamp), so it
 * needs no transaction around it: its own holds the lock until it commits.
 */
export const resolvingBatch = (sql: PgClient.PgClient, b: ResolvingBatch) => {
  const { tenantId, environmentId } = b.scope
  const ev = b.events
  const pr = b.processed
  // MATERIALIZED: evaluated once, before any row is written (every row needs its value). The
  // clock is read in a CTE that scans the lock's, so it cannot run before the lock is granted
  // (a stamp read before a watermark reader's exclusive hold would land below its watermark);
  // the order does not rest on how a target list is evaluated.
  const stamp = b.stamp._tag === "At"
    ? sql`SELECT ${b.stamp.at.toISOString()}::timestamptz AS at`
    : sql`SELECT clock_timestamp() AS at FROM (SELECT pg_advisory_xact_lock_shared(${b.stamp.key}) OFFSET 0) lk`
  return sql<ResolvedEvent>`WITH st AS MATERIALIZED (${stamp}),
    ev AS (
      INSERT INTO events
        (tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, "timestamp", ingested_at, properties, status, error)
      SELECT ${tenantId}, ${environmentId}, t.event_id, t.event_name, t.external_customer_id, c.id, t.ts, st.at,
        t.properties::json,
        CASE WHEN c.id IS NULL THEN 'pending' WHEN t.error IS NULL THEN 'processed' ELSE 'error' END,
        CASE WHEN c.id IS NULL THEN NULL ELSE t.error END
      FROM unnest(${textArray(ev.map((e) => e.eventId))}::text[], ${textArray(ev.map((e) => e.eventName))}::text[],
                  ${textArray(ev.map((e) => e.externalCustomerId))}::text[], ${textArray(ev.map((e) => e.timestamp.toISOString()))}::timestamptz[],
                  ${textArray(ev.map((e) => e.propertiesJson))}::text[], ${textArray(ev.map((e) => e.error))}::text[])
        AS t(event_id, event_name, external_customer_id, ts, properties, error)
      LEFT JOIN customers c
        ON c.tenant_id = ${tenantId} AND c.environment_id = ${environmentId} AND c.external_id = t.external_customer_id
      CROSS JOIN st
      ON CONFLICT (tenant_id, environment_id, event_id) DO NOTHING
      RETURNING event_id, customer_id, event_name, external_customer_id, "timestamp", ingested_at, properties),
    pr AS (
      INSERT INTO events_processed
        (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
      SELECT ${tenantId}, ${environmentId}, p.event_id, p.meter_id, ev.customer_id, ev.event_name, ev."timestamp", ev.ingested_at,
        p.qty, p.qty
      FROM unnest(${textArray(pr.map((r) => r.eventId))}::text[], ${textArray(pr.map((r) => r.meterId))}::text[],
                  ${textArray(pr.map((r) => r.qty))}::numeric[]) AS p(event_id, meter_id, qty)
      JOIN ev ON ev.event_id = p.event_id AND ev.customer_id IS NOT NULL
      ON CONFLICT (tenant_id, environment_id, event_id, meter_id) DO NOTHING),
    pe AS (
      INSERT INTO pending_events
        (tenant_id, environment_id, event_id, external_customer_id, event_name, "timestamp", ingested_at, properties)
      SELECT ${tenantId}, ${environmentId}, ev.event_id, ev.external_customer_id, ev.event_name, ev."timestamp", ev.ingested_at, ev.properties
      FROM ev WHERE ev.customer_id IS NULL
      ON CONFLICT (tenant_id, environment_id, event_id) DO NOTHING)
    SELECT event_id, customer_id FROM ev`
}

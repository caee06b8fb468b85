-- Arrivals of processed rows, sorted by INGESTION time: one entry per row ingest writes to
-- `events_processed` (a first copy, or the repair of a claim left without its row), written just
-- before the row (src/events/clickhouse/FirstCopy.ts). The planning read "which windows got rows
-- first ingested in (a, b]" (EventStore.windowsWithLateRows) reads the entries of (a, b] through
-- the primary index, so a scheduled run costs the rows ingested since the last run, not the
-- tenant's history: `events_processed` is sorted by event time, and the ingestion range alone
-- prunes nothing there (BENCHMARKS.md, "A month of events": 146 s per hourly run at 25M rows).
-- All columns are in the key: re-inserting an entry (a retried insert) only adds an equal row.
CREATE TABLE IF NOT EXISTS processed_arrivals (
  tenant_id String,
  environment_id String,
  meter_id String,
  ingested_at_ms UInt64,
  event_id String,
  timestamp_ms UInt64
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, environment_id, meter_id, ingested_at_ms, event_id, timestamp_ms);

-- Rows written before this table existed get their entry, one per row (a plain INSERT … SELECT:
-- no GROUP BY, so no memory for the pairs of a large table). Copies at the first copy's instant
-- are told apart by the read; a resend at another instant exists only in rows from before 0004
-- and, ingested before this migration, is never in a later run's range. Empty on a fresh
-- database; a second run only adds equal entries.
INSERT INTO processed_arrivals (tenant_id, environment_id, meter_id, ingested_at_ms, event_id, timestamp_ms)
SELECT tenant_id, environment_id, meter_id, ingested_at_ms, event_id, timestamp_ms
FROM events_processed;

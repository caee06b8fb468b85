-- Claims of processed rows, sorted by (event_id, meter_id) and not by time: the ingest check
-- "is this (event, meter) already counted?" finds a resend here through the primary index even
-- when it carries another timestamp (events_processed is sorted by time and cannot answer that
-- without scanning the tenant). One claim per (event, meter): `timestamp_ms` is the instant the
-- counted copy was written at. Same version rule as the other tables (the earliest-ingested claim
-- survives merges and wins reads). See src/events/clickhouse/FirstCopy.ts for the protocol.
CREATE TABLE IF NOT EXISTS processed_keys (
  tenant_id String,
  environment_id String,
  event_id String,
  meter_id String,
  timestamp_ms UInt64,
  ingested_at_ms UInt64,
  version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, environment_id, event_id, meter_id);

-- Rows written before this table existed get their claim: the first-ingested copy's timestamp
-- (the copy reads counted). Empty on a fresh database; a second run only adds equal claims.
INSERT INTO processed_keys (tenant_id, environment_id, event_id, meter_id, timestamp_ms, ingested_at_ms, version)
SELECT tenant_id, environment_id, event_id, meter_id,
       argMax(timestamp_ms, version), argMax(ingested_at_ms, version), max(version)
FROM events_processed
GROUP BY tenant_id, environment_id, event_id, meter_id;

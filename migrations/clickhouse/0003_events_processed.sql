-- Billable rows, one per (event, meter). Counted once per (event_id, meter_id) using the
-- first-ingested copy. `version` = 2^42 - 1 - ingested_at_ms so a merge keeps the first copy too:
-- otherwise a late duplicate could survive a merge and be counted again by a delta read.
CREATE TABLE IF NOT EXISTS events_processed (
  tenant_id String,
  environment_id String,
  event_id String,
  meter_id String,
  customer_id String,
  event_name String,
  timestamp DateTime('UTC'),
  timestamp_ms UInt64,
  ingested_at_ms UInt64,
  qty_total Decimal(38, 12),
  qty_billable Decimal(38, 12),
  version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, environment_id, timestamp, meter_id, event_id);

-- Raw events. ClickHouse 18.16 has no DateTime64: `timestamp` is the whole-second DateTime used
-- for partitioning and the sort key; `timestamp_ms` / `ingested_at_ms` carry exact epoch ms.
-- `version` = update_seq * 2^42 + (2^42 - 1 - ingested_at_ms): a status update (higher seq) replaces
-- the row it was made from, and between two racing copies of one event the earlier-ingested one
-- wins, both in merges and in reads (`ORDER BY version DESC LIMIT 1 BY event_id`).
CREATE TABLE IF NOT EXISTS events (
  tenant_id String,
  environment_id String,
  event_id String,
  event_name String,
  external_customer_id String,
  customer_id String,          -- '' while the customer does not exist yet
  timestamp DateTime('UTC'),
  timestamp_ms UInt64,
  ingested_at_ms UInt64,
  properties String,           -- the raw properties object as JSON text
  status String,               -- processed | pending | error
  error String,                -- '' = no error
  version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, environment_id, timestamp, event_id);

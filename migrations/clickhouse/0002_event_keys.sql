-- Lookup of stored event ids, sorted by id: the pre-insert existence check and status updates find
-- an event here through the primary index (a resend may carry another timestamp, so `events`,
-- sorted by time, cannot answer "is this id stored?" without scanning the tenant).
-- Same version rule as `events`: the earliest-ingested copy survives merges.
CREATE TABLE IF NOT EXISTS event_keys (
  tenant_id String,
  environment_id String,
  event_id String,
  timestamp_ms UInt64,
  ingested_at_ms UInt64,
  version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, environment_id, event_id);

-- A Stripe meter with event_time_window (hour|day) keeps only the newest event per customer per
-- hour/day, so window sums and their late deltas would overwrite each other there. Batches of a
-- mapping whose Stripe meter turns out pre-aggregated are held with this reason, never sent.
ALTER TABLE stripe_sync_batches DROP CONSTRAINT IF EXISTS stripe_sync_batches_skip_reason_check;
ALTER TABLE stripe_sync_batches ADD CONSTRAINT stripe_sync_batches_skip_reason_check
  CHECK (skip_reason IN ('no_mapping', 'too_late', 'zero_quantity', 'mapping_deleted', 'unsupported_formula',
    'pre_aggregated_meter'));

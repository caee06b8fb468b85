-- Issue #16 item 3: every sync run, before its push, re-queues batches Stripe dropped whose
-- mapping changed since (src/repositories/BatchRepairRepo.ts `requeueRepaired`). Those are the
-- `failed` batches holding a Stripe error report (`stripe_error_event_id`); no index selected
-- them, so the statement read the tenant's whole ledger every run (EXPLAIN ANALYZE, 100,000
-- batches: a sequential scan of the month's partition, 0.6 – 7.5 s under load, with nothing to
-- re-queue). This partial index holds only those batches — normally none — so it costs an
-- ordinary batch nothing, and the read is one probe of an empty index. Created on the
-- partitioned table, it is created on every partition, and on those attached later.
CREATE INDEX stripe_sync_batches_held_idx ON stripe_sync_batches (tenant_id, environment_id)
  WHERE sync_status = 'failed' AND stripe_error_event_id IS NOT NULL;

-- Fewer indexes on the batch ledger. Every batch is inserted, then updated twice (`sending`, then
-- `synced`); sync_status is indexed, so neither update is HOT and each one adds an entry to every
-- index whose key or predicate covers the new row. 100,000 aggregates spent most of a sync run in
-- those index writes on PGlite. What each query uses afterwards (src/repositories/SyncBatchRepo.ts):
--   by id (marks, re-evaluation updates)              → primary key
--   push queue, oldest unsynced window                → stripe_sync_batches_open_idx (partial, 0004)
--   carry per (customer, meter)                       → stripe_sync_batches_carry_idx (partial, 0004)
--   (customer, meter, window) totals for verification → the (tenant, env, customer, meter, event_type,
--                                                       window_start, sequence) unique key
--   API list, counts per window, hourly synced totals → stripe_sync_batches_window_idx
--   skipped batches to re-evaluate each run           → stripe_sync_batches_reevaluate_idx (below)

-- No query filters or orders on created_at, and retention never prunes the ledger.
DROP INDEX IF EXISTS stripe_sync_batches_created_idx;

-- Its one selective use was the per-run re-evaluation read (skipped no_mapping / mapping_deleted
-- batches, keyset by id); a partial index holds only those rows and costs ordinary batches nothing.
-- Status counts scan the tenant's rows either way; synced totals per hour use the window index.
DROP INDEX IF EXISTS stripe_sync_batches_status_idx;
CREATE INDEX stripe_sync_batches_reevaluate_idx ON stripe_sync_batches (tenant_id, environment_id, id)
  WHERE sync_status = 'skipped' AND skip_reason IN ('no_mapping', 'mapping_deleted');

-- The identifier is a hash of (tenant, env, customer, meter, event type, window start, sequence)
-- (src/sync/Identifier.ts), which the table's unique key already covers: two rows with the same
-- identifier would break that key first. Nothing looks batches up by identifier.
ALTER TABLE stripe_sync_batches DROP CONSTRAINT IF EXISTS stripe_sync_batches_identifier_key;

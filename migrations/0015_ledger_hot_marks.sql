-- Issue #16 item 3: the `sending` mark (and a transient failure's `sending` → `pending`) as HOT
-- updates. PostgreSQL updates a row in place (HOT: no new index entry, the old version pruned
-- with the page) only when no column any index names — in its key or in its predicate — changes
-- value, and the row's page has room for the new version. Every push writes each batch pending →
-- sending → synced; `sync_status` was named in the predicates of the open, re-evaluation and held
-- indexes, so both marks inserted a new entry into every index of the ledger for every batch.
--
-- 1. `queue_status`: sync_status with `sending` folded into `pending`, a stored generated column.
--    The partial indexes' predicates name it instead of sync_status, so pending → sending and
--    sending → pending change no indexed value. Queries that want those indexes say the same
--    predicate on queue_status (src/repositories/ledger/Queue.ts, Reports.ts, BatchRepairRepo.ts);
--    the planner cannot prove a predicate on a generated column from one on sync_status.
--    `synced` still changes it (the batch leaves the open index), so that mark stays non-HOT.
-- 2. fillfactor 50 on every partition: a mark rewrites every batch of a page at once, so a HOT
--    update of all of them needs room for a second version of each. Partitioned tables take no
--    storage parameters, so each partition gets it, and `flexprice_ledger_partitions` gives it to
--    the months it creates. The old versions are pruned when the next statement reads the page,
--    which gives the `synced` versions their room on the same page.
--
-- Upgrade cost: adding a stored generated column rewrites every ledger partition (and with the
-- fillfactor set first, the rewrite leaves the room on existing pages too); a ledger of a few
-- months is rewritten once, under the migration's lock. Accepted for a per-batch saving on every
-- later sync run.

DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT i.inhrelid::regclass AS part FROM pg_inherits i WHERE i.inhparent = 'stripe_sync_batches'::regclass LOOP
    EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', r.part);
  END LOOP;
END $$;

ALTER TABLE stripe_sync_batches ADD COLUMN queue_status text
  GENERATED ALWAYS AS (CASE WHEN sync_status = 'sending' THEN 'pending' ELSE sync_status END) STORED;

DROP INDEX IF EXISTS stripe_sync_batches_open_idx;
CREATE INDEX stripe_sync_batches_open_idx ON stripe_sync_batches (tenant_id, environment_id, window_start, id)
  WHERE queue_status IN ('pending', 'failed');
DROP INDEX IF EXISTS stripe_sync_batches_reevaluate_idx;
CREATE INDEX stripe_sync_batches_reevaluate_idx ON stripe_sync_batches (tenant_id, environment_id, id)
  WHERE queue_status = 'skipped' AND skip_reason IN ('no_mapping', 'mapping_deleted');
DROP INDEX IF EXISTS stripe_sync_batches_held_idx;
CREATE INDEX stripe_sync_batches_held_idx ON stripe_sync_batches (tenant_id, environment_id)
  WHERE queue_status = 'failed' AND stripe_error_event_id IS NOT NULL;

ANALYZE stripe_sync_batches;

-- As in 0013, with two changes: a new month is created with the generated column (an attached
-- partition must generate it as the parent does) and the fillfactor above, and rows moved out of
-- the default partition are inserted by column name without the generated ones, which take no
-- inserted value.
CREATE OR REPLACE FUNCTION flexprice_ledger_partitions(from_month timestamptz, through timestamptz, drop_before timestamptz)
RETURNS TABLE (created integer, dropped integer)
LANGUAGE plpgsql SECURITY DEFINER SET timezone = 'UTC' SET search_path FROM CURRENT
AS $$
DECLARE
  m timestamptz;
  last_month timestamptz;
  part text;
  n_created integer := 0;
  n_dropped integer := 0;
  has_rows boolean;
  cols text;
  r record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('flexprice_ledger_partitions'));
  SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
  FROM pg_attribute a
  WHERE a.attrelid = 'stripe_sync_batches'::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
  last_month := date_trunc('month', through AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  SELECT date_trunc('month', min(window_start) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' INTO m FROM stripe_sync_batches_default;
  m := LEAST(COALESCE(m, last_month), last_month, date_trunc('month', from_month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC');
  WHILE m <= last_month LOOP
    part := 'stripe_sync_batches_p' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
    IF to_regclass(part) IS NULL THEN
      EXECUTE format('CREATE TABLE %I (LIKE stripe_sync_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)
        WITH (fillfactor = 50)', part);
      EXECUTE format('WITH moved AS (DELETE FROM stripe_sync_batches_default WHERE window_start >= %L AND window_start < %L RETURNING *)
        INSERT INTO %I (%s) SELECT %s FROM moved', m, m + interval '1 month', part, cols, cols);
      EXECUTE format('ALTER TABLE stripe_sync_batches ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, m, m + interval '1 month');
      PERFORM flexprice_ledger_guard(part::regclass);
      n_created := n_created + 1;
    END IF;
    m := m + interval '1 month';
  END LOOP;
  FOR r IN
    SELECT c.relname AS name
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'stripe_sync_batches'::regclass AND c.relname ~ '^stripe_sync_batches_p[0-9]{6}$'
      AND (to_date(substr(c.relname, 22, 6), 'YYYYMM') + interval '1 month')::timestamp AT TIME ZONE 'UTC' <= drop_before
  LOOP
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', r.name) INTO has_rows;
    IF NOT has_rows THEN
      EXECUTE format('DROP TABLE %I', r.name);
      n_dropped := n_dropped + 1;
    END IF;
  END LOOP;
  RETURN QUERY SELECT n_created, n_dropped;
END $$;

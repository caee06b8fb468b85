-- Issue #18 item 5: the sync ledger no longer grows for ever.
--
-- 1. `stripe_sync_batches` becomes a table partitioned by month of `window_start` (UTC), on
--    PostgreSQL and PGlite alike (on PGlite the cost measured within noise, BENCHMARKS.md "Ledger
--    partitions on PGlite", and PGlite runs no autovacuum: rows deleted from a plain table would
--    stay as dead rows until a VACUUM, an emptied month is dropped whole). Rows are copied from the
--    old table. Each month is a partition
--    `stripe_sync_batches_pYYYYMM`; a DEFAULT partition catches a month that has none yet, and
--    `flexprice_ledger_partitions` (below, run by the hourly retention pass) creates the coming
--    months, moves any default rows into their month and drops emptied months past the horizon.
--
-- 2. `stripe_sync_ledger_archive`: batches whose windows lie wholly before the retention horizon
--    (never less than Stripe's 35 days) and that are final (synced or skipped) are deleted from
--    the ledger and added to one row per (tenant, environment, customer, meter, hour) holding
--    exactly what later reads need (src/repositories/LedgerArchiveRepo.ts), and to one row per
--    (tenant, environment, customer, meter) in `stripe_sync_ledger_pairs`:
--      carry            Σ (aggregated − sent) over the archived batches with a sent quantity:
--                       the whole-unit / 15-digit carry (src/sync/Carry.ts) reads ledger + pairs;
--      synced_*         Σ sent, Σ |sent| and the count of synced batches: reconciliation's hourly
--                       figures (src/sync/Reconciliation.ts) read ledger + archive;
--      counts, event_count, aggregated_total: the status counts (pairs) and an audit trail.
--
-- Uniqueness (exactly-once) under partitioning. A partitioned table's unique constraints must
-- contain the partition key. The ledger's exactly-once key is
--   UNIQUE (tenant_id, environment_id, customer_id, meter_id, event_type, window_start, sequence)
-- which contains window_start, so it is kept whole and enforced across all partitions; the meter
-- event identifier is a hash of exactly that tuple (src/sync/Identifier.ts; its own unique
-- constraint was dropped in 0005 for that reason), so identifier uniqueness is unchanged. The
-- primary key becomes (id, window_start): `id` alone is no longer enforced unique by the
-- database; ids are random 120-bit tokens generated once per batch (src/domain/Ids.ts), and
-- nothing relies on the database to reject a duplicate id. Any unique constraint the old table
-- has that lacks window_start makes this migration fail rather than silently weaken it.
-- Archiving frees a row's key, but the key cannot come back: a window pass's sequence comes from
-- stripe_sync_windows.last_sequence, which is never archived, and a window past Stripe's 35-day
-- horizon only gets `too_late` skipped batches, never a send.
--
-- Built from the old table's definition (LIKE + its index definitions), so columns and indexes
-- added by earlier migrations carry over whatever they are.

-- Row-level security (migration 0012, when present): a table rebuilt or created here gets the
-- tenant policy again through 0012's `flexprice_tenant_rls`, partitions included (they are tables
-- with a tenant_id column too; queries through the parent use the parent's policy). Without 0012
-- this does nothing.
CREATE OR REPLACE FUNCTION flexprice_ledger_guard(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF to_regprocedure('flexprice_tenant_rls(regclass)') IS NOT NULL THEN
    EXECUTE format('SELECT flexprice_tenant_rls(%L::regclass)', tbl::text);
  END IF;
END $$;

DO $$
DECLARE
  idx text;
  defs text[];
  cons text[];
  lo timestamptz;
  hi timestamptz;
  m timestamptz;
BEGIN
  -- month arithmetic on timestamptz follows the session time zone: months are UTC months
  PERFORM set_config('timezone', 'UTC', true);
  -- unique constraints must contain window_start (see above)
  IF EXISTS (
    SELECT 1 FROM pg_constraint c
    WHERE c.conrelid = 'stripe_sync_batches'::regclass AND c.contype = 'u'
      AND NOT EXISTS (
        SELECT 1 FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k
        WHERE a.attname = 'window_start')
  ) THEN
    RAISE EXCEPTION 'stripe_sync_batches has a unique constraint without window_start: monthly partitioning would weaken it';
  END IF;

  SELECT array_agg(pg_get_indexdef(i.indexrelid)) INTO defs
  FROM pg_index i
  WHERE i.indrelid = 'stripe_sync_batches'::regclass
    AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);
  SELECT array_agg(format('ALTER TABLE stripe_sync_batches ADD CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid))) INTO cons
  FROM pg_constraint c
  WHERE c.conrelid = 'stripe_sync_batches'::regclass AND c.contype = 'u';

  ALTER TABLE stripe_sync_batches RENAME TO stripe_sync_batches_unpartitioned;
  CREATE TABLE stripe_sync_batches (LIKE stripe_sync_batches_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (window_start);
  CREATE TABLE stripe_sync_batches_default PARTITION OF stripe_sync_batches DEFAULT;

  SELECT date_trunc('month', min(window_start) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' INTO lo FROM stripe_sync_batches_unpartitioned;
  hi := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '3 months';
  m := LEAST(COALESCE(lo, hi - interval '3 months'), hi - interval '3 months');
  WHILE m < hi LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF stripe_sync_batches FOR VALUES FROM (%L) TO (%L)',
      'stripe_sync_batches_p' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM'), m, m + interval '1 month');
    m := m + interval '1 month';
  END LOOP;

  INSERT INTO stripe_sync_batches SELECT * FROM stripe_sync_batches_unpartitioned;
  DROP TABLE stripe_sync_batches_unpartitioned;

  ALTER TABLE stripe_sync_batches ADD PRIMARY KEY (id, window_start);
  FOREACH idx IN ARRAY COALESCE(cons, ARRAY[]::text[]) LOOP
    EXECUTE idx;
  END LOOP;
  FOREACH idx IN ARRAY COALESCE(defs, ARRAY[]::text[]) LOOP
    EXECUTE regexp_replace(idx, ' ON (\S+\.)?stripe_sync_batches_unpartitioned ', ' ON stripe_sync_batches ');
  END LOOP;

  PERFORM flexprice_ledger_guard('stripe_sync_batches'::regclass);
  PERFORM flexprice_ledger_guard(i.inhrelid::regclass) FROM pg_inherits i WHERE i.inhparent = 'stripe_sync_batches'::regclass;
END $$;

ANALYZE stripe_sync_batches;

CREATE TABLE stripe_sync_ledger_archive (
  tenant_id         text NOT NULL,
  environment_id    text NOT NULL,
  customer_id       text NOT NULL,
  meter_id          text NOT NULL,
  -- the UTC hour of the archived batches' window_start (reconciliation's granularity)
  hour              timestamptz NOT NULL,
  -- unconstrained numeric: sums of numeric(38, 12) values must not overflow
  carry             numeric NOT NULL DEFAULT 0,
  aggregated_total  numeric NOT NULL DEFAULT 0,
  synced_total      numeric NOT NULL DEFAULT 0,
  synced_abs_total  numeric NOT NULL DEFAULT 0,
  synced_batches    bigint NOT NULL DEFAULT 0,
  skipped_batches   bigint NOT NULL DEFAULT 0,
  event_count       bigint NOT NULL DEFAULT 0,
  archived_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id, customer_id, meter_id, hour)
);
-- Reconciliation reads a time range of one tenant.
CREATE INDEX stripe_sync_ledger_archive_hour_idx ON stripe_sync_ledger_archive (tenant_id, environment_id, hour);
SELECT flexprice_ledger_guard('stripe_sync_ledger_archive'::regclass);

-- The same archive per (tenant, environment, customer, meter): one row per pair whatever the age of
-- the ledger, so the carry read of every sync run and the status counts stay O(pairs), not
-- O(archived hours). Written in the same statement as the hourly rows.
CREATE TABLE stripe_sync_ledger_pairs (
  tenant_id         text NOT NULL,
  environment_id    text NOT NULL,
  customer_id       text NOT NULL,
  meter_id          text NOT NULL,
  carry             numeric NOT NULL DEFAULT 0,
  aggregated_total  numeric NOT NULL DEFAULT 0,
  synced_total      numeric NOT NULL DEFAULT 0,
  synced_batches    bigint NOT NULL DEFAULT 0,
  skipped_batches   bigint NOT NULL DEFAULT 0,
  event_count       bigint NOT NULL DEFAULT 0,
  archived_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id, customer_id, meter_id)
);
SELECT flexprice_ledger_guard('stripe_sync_ledger_pairs'::regclass);

-- Partition upkeep: creates the missing months from `from_month` (or the oldest row in the default
-- partition, if older) up to `through`, moving default rows into their new month, and drops months that end at
-- or before `drop_before` and hold no row. SECURITY DEFINER: creating and dropping partitions needs
-- the table owner (the migrating user), while the service's queries may run as a role that owns
-- nothing. Serialised by an advisory lock so replicas cannot race on the same month.
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
  r record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('flexprice_ledger_partitions'));
  last_month := date_trunc('month', through AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  SELECT date_trunc('month', min(window_start) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' INTO m FROM stripe_sync_batches_default;
  m := LEAST(COALESCE(m, last_month), last_month, date_trunc('month', from_month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC');
  WHILE m <= last_month LOOP
    part := 'stripe_sync_batches_p' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
    IF to_regclass(part) IS NULL THEN
      EXECUTE format('CREATE TABLE %I (LIKE stripe_sync_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
      EXECUTE format('WITH moved AS (DELETE FROM stripe_sync_batches_default WHERE window_start >= %L AND window_start < %L RETURNING *)
        INSERT INTO %I SELECT * FROM moved', m, m + interval '1 month', part);
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

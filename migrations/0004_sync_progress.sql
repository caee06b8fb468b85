-- Sync pipeline progress at (window, meter) granularity, so that a meter whose mapping is
-- disabled and re-enabled later, or created after usage was ingested, has its own watermark and
-- never loses or double-counts rows another meter's progress already passed.

-- For one (window, meter): every processed row with ingested_at <= watermark is in the ledger.
CREATE TABLE stripe_sync_window_meters (
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  window_start    timestamptz NOT NULL,
  meter_id        text NOT NULL,
  window_end      timestamptz NOT NULL,
  watermark       timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id, meter_id, window_start)
);

-- Per meter: `watermark` = the run watermark up to which every window starting before
-- `due_through` has no rows between its own progress watermark and this one; windows starting at
-- or after `due_through` were not yet due at that run.
CREATE TABLE stripe_sync_meter_marks (
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  meter_id        text NOT NULL,
  watermark       timestamptz NOT NULL,
  due_through     timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id, meter_id)
);

-- MAX/LATEST meters and Stripe meters whose formula is not `sum` cannot receive hourly sums.
ALTER TABLE stripe_sync_batches DROP CONSTRAINT IF EXISTS stripe_sync_batches_skip_reason_check;
ALTER TABLE stripe_sync_batches ADD CONSTRAINT stripe_sync_batches_skip_reason_check
  CHECK (skip_reason IN ('no_mapping', 'too_late', 'zero_quantity', 'mapping_deleted', 'unsupported_formula'));

-- Whole-unit / 15-digit carry: only rows where what was sent differs from what was aggregated.
CREATE INDEX stripe_sync_batches_carry_idx ON stripe_sync_batches (tenant_id, environment_id, customer_id, meter_id)
  WHERE sent_quantity IS NOT NULL AND sent_quantity <> aggregated_quantity;
-- The push queue in (window_start, id) order without sorting every open batch per page.
CREATE INDEX stripe_sync_batches_open_idx ON stripe_sync_batches (tenant_id, environment_id, window_start, id)
  WHERE sync_status IN ('pending', 'sending', 'failed');

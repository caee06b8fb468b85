-- The window grid of a tenant environment over time (src/sync/WindowGrid.ts): `minutes` applies
-- from `effective_from` up to the next row's. The oldest row (stored at the Unix epoch) is the
-- size in force before the first change. No rows: stripe_tenant_configs.aggregation_window_minutes
-- applies everywhere. Rows are written only when aggregation_window_minutes changes while the
-- ledger holds windows, so windows already synced keep their bounds.
CREATE TABLE stripe_sync_window_grid (
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  effective_from  timestamptz NOT NULL,
  minutes         integer NOT NULL CHECK (minutes IN (15, 30, 60, 120, 360, 720, 1440)),
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id, effective_from)
);

-- Stripe integration entities (requirements Task 1) and what exactly-once sync needs.

CREATE TABLE customer_integration_mappings (
  id                    text PRIMARY KEY,
  tenant_id             text NOT NULL,
  environment_id        text NOT NULL,
  customer_id           text NOT NULL,
  provider_type         text NOT NULL DEFAULT 'stripe',
  provider_customer_id  text NOT NULL,
  metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
  status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
  source                text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'webhook', 'migration', 'csv')),
  migration_id          text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, environment_id, provider_type, customer_id),
  UNIQUE (tenant_id, environment_id, provider_type, provider_customer_id)
);

CREATE TABLE stripe_tenant_configs (
  tenant_id                   text NOT NULL,
  environment_id              text NOT NULL,
  api_key_encrypted           text NOT NULL,
  api_key_hint                text NOT NULL,           -- e.g. "sk_test_…4242", never the key
  webhook_secret_encrypted    text,
  key_version                 text NOT NULL,
  sync_enabled                boolean NOT NULL DEFAULT true,
  aggregation_window_minutes  integer NOT NULL DEFAULT 60
    CHECK (aggregation_window_minutes IN (15, 30, 60, 120, 360, 720, 1440)),
  grace_period_minutes        integer NOT NULL DEFAULT 5 CHECK (grace_period_minutes >= 0),
  transport                   text NOT NULL DEFAULT 'stream' CHECK (transport IN ('stream', 'v1')),
  webhook_config              jsonb NOT NULL DEFAULT '{}'::jsonb,
  stripe_account_id           text,
  livemode                    boolean NOT NULL DEFAULT false,
  created_at                  timestamptz NOT NULL DEFAULT now(),
  updated_at                  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id)
);
CREATE INDEX stripe_tenant_configs_account_idx ON stripe_tenant_configs (stripe_account_id);

CREATE TABLE meter_provider_mappings (
  id                    text PRIMARY KEY,
  tenant_id             text NOT NULL,
  environment_id        text NOT NULL,
  meter_id              text NOT NULL,
  provider_type         text NOT NULL DEFAULT 'stripe',
  provider_meter_id     text NOT NULL,
  stripe_event_name     text NOT NULL,
  customer_payload_key  text NOT NULL,
  value_payload_key     text NOT NULL,
  formula               text NOT NULL CHECK (formula IN ('sum', 'count', 'last')),
  whole_units           boolean NOT NULL DEFAULT false,
  sync_enabled          boolean NOT NULL DEFAULT true,
  configuration         jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, environment_id, provider_type, meter_id),
  UNIQUE (tenant_id, environment_id, provider_type, provider_meter_id)
);

-- The batch ledger: written 'pending' before anything is sent; identifier is deterministic
-- (tenant, env, customer, meter, window, sequence) and is both the meter event identifier and
-- the Idempotency-Key.
CREATE TABLE stripe_sync_batches (
  id                   text PRIMARY KEY,
  tenant_id            text NOT NULL,
  environment_id       text NOT NULL,
  customer_id          text NOT NULL,
  meter_id             text NOT NULL,
  event_type           text NOT NULL,
  window_start         timestamptz NOT NULL,
  window_end           timestamptz NOT NULL,
  sequence             integer NOT NULL,
  aggregated_quantity  numeric(38, 12) NOT NULL,
  sent_quantity        numeric(38, 12),             -- what Stripe receives (whole units: integer part with carry)
  event_count          bigint NOT NULL,
  identifier           text NOT NULL UNIQUE,
  stripe_event_id      text,
  provider_meter_id    text,
  sync_status          text NOT NULL CHECK (sync_status IN ('pending', 'sending', 'synced', 'failed', 'skipped')),
  skip_reason          text CHECK (skip_reason IN ('no_mapping', 'too_late', 'zero_quantity', 'mapping_deleted')),
  retry_count          integer NOT NULL DEFAULT 0,
  error_code           text,
  error_message        text,
  ingested_after       timestamptz,
  watermark            timestamptz NOT NULL,
  first_sent_at        timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  synced_at            timestamptz,
  UNIQUE (tenant_id, environment_id, customer_id, meter_id, event_type, window_start, sequence)
);
CREATE INDEX stripe_sync_batches_status_idx ON stripe_sync_batches (tenant_id, environment_id, sync_status, window_start);
CREATE INDEX stripe_sync_batches_window_idx ON stripe_sync_batches (tenant_id, environment_id, window_start);
CREATE INDEX stripe_sync_batches_created_idx ON stripe_sync_batches (created_at);

-- Per window progress: how far (ingested_at watermark) each window has been aggregated.
CREATE TABLE stripe_sync_windows (
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  window_start    timestamptz NOT NULL,
  window_end      timestamptz NOT NULL,
  watermark       timestamptz NOT NULL,
  last_sequence   integer NOT NULL DEFAULT 0,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, environment_id, window_start)
);

CREATE TABLE stripe_sync_runs (
  id              text PRIMARY KEY,
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
  status          text NOT NULL CHECK (status IN ('running', 'completed', 'partial', 'failed')),
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  windows         integer NOT NULL DEFAULT 0,
  batches_created integer NOT NULL DEFAULT 0,
  batches_synced  integer NOT NULL DEFAULT 0,
  batches_failed  integer NOT NULL DEFAULT 0,
  batches_skipped integer NOT NULL DEFAULT 0,
  error           text
);
CREATE INDEX stripe_sync_runs_idx ON stripe_sync_runs (tenant_id, environment_id, started_at DESC);

-- One replica owns a tenant environment's sync at a time; a lease that is not renewed expires.
CREATE TABLE sync_leases (
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  owner           text NOT NULL,
  expires_at      timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, environment_id)
);

CREATE TABLE webhook_events (
  id               text PRIMARY KEY,
  tenant_id        text NOT NULL,
  environment_id   text NOT NULL,
  stripe_event_id  text NOT NULL,
  type             text NOT NULL,
  stripe_created   timestamptz,
  stripe_object_id text,
  received_at      timestamptz NOT NULL DEFAULT now(),
  processed_at     timestamptz,
  status           text NOT NULL CHECK (status IN ('received', 'processed', 'duplicate', 'unmapped', 'conflict', 'failed', 'ignored')),
  error            text,
  details          jsonb NOT NULL DEFAULT '{}'::jsonb,
  UNIQUE (tenant_id, environment_id, stripe_event_id)
);
CREATE INDEX webhook_events_status_idx ON webhook_events (tenant_id, environment_id, status, received_at DESC);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

-- Who or what read or changed a secret or a config. Never the secret itself.
CREATE TABLE audit_log (
  id              text PRIMARY KEY,
  tenant_id       text,
  environment_id  text,
  actor           text NOT NULL,
  action          text NOT NULL,
  target          text,
  source_ip       text,
  details         jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, environment_id, created_at DESC);

CREATE TABLE migration_jobs (
  id              text PRIMARY KEY,
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  kind            text NOT NULL CHECK (kind IN ('stripe_customers', 'csv')),
  status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'rolled_back')),
  dry_run         boolean NOT NULL DEFAULT false,
  options         jsonb NOT NULL DEFAULT '{}'::jsonb,
  cursor          text,
  pages           integer NOT NULL DEFAULT 0,
  counts          jsonb NOT NULL DEFAULT '{}'::jsonb,
  problems        jsonb NOT NULL DEFAULT '[]'::jsonb,
  error           text,
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  heartbeat_at    timestamptz NOT NULL DEFAULT now()
);
-- One running migration per tenant environment.
CREATE UNIQUE INDEX migration_jobs_running_idx ON migration_jobs (tenant_id, environment_id) WHERE status = 'running';

-- What a migration created, for rollback.
CREATE TABLE migration_created_entities (
  migration_id    text NOT NULL REFERENCES migration_jobs(id),
  entity_type     text NOT NULL CHECK (entity_type IN ('customer', 'mapping')),
  entity_id       text NOT NULL,
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  PRIMARY KEY (migration_id, entity_type, entity_id)
);

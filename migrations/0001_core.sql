-- Core FlexPrice-compatible model. Every row carries tenant_id and environment_id and every
-- query filters by both. Quantities are numeric(38,12): exact, never floating point.

CREATE TABLE tenants (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE environments (
  id          text PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants(id),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name)
);

-- API keys are stored as SHA-256 hashes; the plaintext is shown once at creation.
CREATE TABLE api_keys (
  id              text PRIMARY KEY,
  tenant_id       text NOT NULL REFERENCES tenants(id),
  environment_id  text NOT NULL REFERENCES environments(id),
  key_hash        text NOT NULL UNIQUE,
  key_prefix      text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  revoked_at      timestamptz
);

CREATE TABLE customers (
  id              text PRIMARY KEY,
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  external_id     text NOT NULL,
  name            text,
  email           text,
  metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, environment_id, external_id)
);

CREATE TABLE meters (
  id                  text PRIMARY KEY,
  tenant_id           text NOT NULL,
  environment_id      text NOT NULL,
  name                text NOT NULL,
  event_name          text NOT NULL,
  aggregation_type    text NOT NULL CHECK (aggregation_type IN ('COUNT', 'SUM', 'MAX', 'LATEST')),
  aggregation_field   text,
  filters             jsonb NOT NULL DEFAULT '[]'::jsonb,
  created_at          timestamptz NOT NULL DEFAULT now(),
  deleted_at          timestamptz
);
CREATE INDEX meters_event_name_idx ON meters (tenant_id, environment_id, event_name) WHERE deleted_at IS NULL;

-- Raw events (relational event store backend). properties is json (not jsonb) so numbers keep
-- the exact text the client sent.
CREATE TABLE events (
  tenant_id             text NOT NULL,
  environment_id        text NOT NULL,
  event_id              text NOT NULL,
  event_name            text NOT NULL,
  external_customer_id  text NOT NULL,
  customer_id           text,
  "timestamp"           timestamptz NOT NULL,
  ingested_at           timestamptz NOT NULL,
  properties            json NOT NULL,
  status                text NOT NULL CHECK (status IN ('processed', 'pending', 'error')),
  error                 text,
  PRIMARY KEY (tenant_id, environment_id, event_id)
);
CREATE INDEX events_time_idx ON events (tenant_id, environment_id, "timestamp" DESC, event_id DESC);
CREATE INDEX events_customer_idx ON events (tenant_id, environment_id, external_customer_id, "timestamp" DESC);

-- One row per (event, matching meter).
CREATE TABLE events_processed (
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  event_id        text NOT NULL,
  meter_id        text NOT NULL,
  customer_id     text NOT NULL,
  event_name      text NOT NULL,
  "timestamp"     timestamptz NOT NULL,
  ingested_at     timestamptz NOT NULL,
  qty_total       numeric(38, 12) NOT NULL,
  qty_billable    numeric(38, 12) NOT NULL,
  PRIMARY KEY (tenant_id, environment_id, event_id, meter_id)
);
CREATE INDEX events_processed_window_idx ON events_processed (tenant_id, environment_id, "timestamp", meter_id);
CREATE INDEX events_processed_ingested_idx ON events_processed (tenant_id, environment_id, ingested_at);

-- Events whose customer does not exist yet, whatever the event store backend. Processed and
-- deleted when the customer appears (API, webhook or migration).
CREATE TABLE pending_events (
  tenant_id             text NOT NULL,
  environment_id        text NOT NULL,
  event_id              text NOT NULL,
  external_customer_id  text NOT NULL,
  event_name            text NOT NULL,
  "timestamp"           timestamptz NOT NULL,
  ingested_at           timestamptz NOT NULL,
  properties            json NOT NULL,
  PRIMARY KEY (tenant_id, environment_id, event_id)
);
CREATE INDEX pending_events_customer_idx ON pending_events (tenant_id, environment_id, external_customer_id);

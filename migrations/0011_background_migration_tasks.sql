-- Long migration work runs in the background in bounded chunks (issue #15): a CSV import reports
-- rows done out of rows total, and rollbacks and verifications are tasks of their own, with
-- progress, a claim and a heartbeat like a migration job, resumed after a crash.
ALTER TABLE migration_jobs ADD COLUMN rows_total integer;
ALTER TABLE migration_jobs ADD COLUMN rows_done integer NOT NULL DEFAULT 0;
-- CSV: what the counts do not say (valid rows, applied, overwritten, warnings).
ALTER TABLE migration_jobs ADD COLUMN result jsonb;

CREATE TABLE migration_tasks (
  id              text PRIMARY KEY,
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  migration_id    text NOT NULL REFERENCES migration_jobs(id),
  kind            text NOT NULL CHECK (kind IN ('rollback', 'verify')),
  status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  cursor          text,
  done            integer NOT NULL DEFAULT 0,
  total           integer NOT NULL DEFAULT 0,
  result          jsonb NOT NULL DEFAULT '{}'::jsonb,
  error           text,
  claimed_by      text,
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  heartbeat_at    timestamptz NOT NULL DEFAULT now()
);
-- One running task of a kind per migration.
CREATE UNIQUE INDEX migration_tasks_running_idx ON migration_tasks (migration_id, kind) WHERE status = 'running';
CREATE INDEX migration_tasks_running_all_idx ON migration_tasks (status, heartbeat_at) WHERE status = 'running';
CREATE INDEX migration_tasks_migration_idx ON migration_tasks (tenant_id, environment_id, migration_id, kind, started_at DESC);

-- Migration jobs: which process is running a job (so a restarted or other replica can take over
-- a job whose owner stopped heartbeating), the rollback report, and the mapping rows a
-- migration replaced (conflict_strategy=overwrite or a re-activated deleted row), so a rollback
-- can put them back.
ALTER TABLE migration_jobs ADD COLUMN claimed_by text;
ALTER TABLE migration_jobs ADD COLUMN rollback jsonb;
CREATE INDEX migration_jobs_list_idx ON migration_jobs (tenant_id, environment_id, started_at DESC);
CREATE INDEX migration_jobs_running_all_idx ON migration_jobs (status, heartbeat_at) WHERE status = 'running';

CREATE TABLE migration_replaced_mappings (
  migration_id    text NOT NULL REFERENCES migration_jobs(id),
  mapping_id      text NOT NULL,
  tenant_id       text NOT NULL,
  environment_id  text NOT NULL,
  snapshot        jsonb NOT NULL,
  PRIMARY KEY (migration_id, mapping_id)
);

-- Row-level security: the second wall between tenants (the first is the tenant_id/environment_id
-- filter every repository query carries).
--
-- RULE FOR EVERY LATER MIGRATION: every new table with a tenant_id column gets a policy, by
-- ending its migration with
--     SELECT flexprice_tenant_rls('the_new_table');
-- The service refuses to start while a table with a tenant_id column has no row-level security
-- (src/db/RowSecurity.ts, `assertTenantTablesGuarded`), so a forgotten line fails every test.
--
-- How it works (README "Row-level security"):
-- * `flexprice_app` (NOLOGIN, no BYPASSRLS, not the owner of any table) is the role the service's
--   queries run as. Each table's policy admits a row only when its tenant_id (and environment_id
--   when the table has one) equals the settings `flexprice.tenant_id` / `flexprice.environment_id`,
--   which the service sets on a connection from the tenant scope (CurrentTenant) every time it
--   hands the connection to a query or transaction. Outside any tenant scope they are empty:
--   a query sees no tenant rows at all and cannot write one.
-- * `flexprice_system` (NOLOGIN, BYPASSRLS, DML only) is for the few jobs that work across
--   tenants by design (API key lookup, tenant creation, the scheduler's and sweepers'
--   enumeration of tenants, retention); code reaches it only through `RowSecurity.asSystem`.
-- * The connecting user owns the tables and runs the migrations; superusers and table owners
--   bypass RLS, which is why the service switches to one of the two roles above for its work.
--
-- Roles are cluster-wide while databases are not: several databases on one server (tests) run
-- this file concurrently, so role creation tolerates a role that appeared meanwhile.

DO $$
BEGIN
  BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flexprice_app') THEN
      CREATE ROLE flexprice_app NOLOGIN NOBYPASSRLS;
    END IF;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
  END;
  BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flexprice_system') THEN
      CREATE ROLE flexprice_system NOLOGIN BYPASSRLS;
    END IF;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
  END;
  -- A superuser may SET ROLE to anyone; any other connecting user needs membership.
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
    IF NOT pg_has_role(session_user, 'flexprice_app', 'MEMBER') THEN
      EXECUTE format('GRANT flexprice_app TO %I', session_user);
    END IF;
    IF NOT pg_has_role(session_user, 'flexprice_system', 'MEMBER') THEN
      EXECUTE format('GRANT flexprice_system TO %I', session_user);
    END IF;
  END IF;
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO flexprice_app, flexprice_system', current_schema());
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO flexprice_app, flexprice_system', current_schema());
  EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO flexprice_app, flexprice_system', current_schema());
END $$;

-- Tables created later by the migrating user are usable by both roles; the policy is what the
-- rule above adds.
ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO flexprice_app, flexprice_system;
ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO flexprice_app, flexprice_system;

-- The migrator's bookkeeping is not the service's business.
REVOKE ALL ON effect_sql_migrations FROM flexprice_app, flexprice_system;

-- Enables RLS on one tenant table with the policy described above. Idempotent.
CREATE OR REPLACE FUNCTION flexprice_tenant_rls(tbl regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  cond text := 'tenant_id = current_setting(''flexprice.tenant_id'', true)';
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tbl AND attname = 'tenant_id' AND NOT attisdropped) THEN
    RAISE EXCEPTION 'flexprice_tenant_rls: % has no tenant_id column', tbl;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tbl AND attname = 'environment_id' AND NOT attisdropped) THEN
    cond := cond || ' AND environment_id = current_setting(''flexprice.environment_id'', true)';
  END IF;
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
  EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
  EXECUTE format('CREATE POLICY tenant_isolation ON %s USING (%s) WITH CHECK (%s)', tbl, cond, cond);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO flexprice_app, flexprice_system', tbl);
END $$;

-- Every table that has a tenant_id column now (those of 0001–0011, whoever wrote them).
DO $$
DECLARE
  t regclass;
BEGIN
  FOR t IN
    SELECT c.oid::regclass FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
  LOOP
    PERFORM flexprice_tenant_rls(t);
  END LOOP;
END $$;

-- The tenants table names the tenant by its id.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
  USING (id = current_setting('flexprice.tenant_id', true))
  WITH CHECK (id = current_setting('flexprice.tenant_id', true));

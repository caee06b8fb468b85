/**
 * Row-level security, the second wall (migration 0012, src/db/RowSecurity.ts): a query that
 * forgets its tenant filter sees only its own tenant's rows, or none outside any tenant scope,
 * on PGlite and on a PostgreSQL server; and a later table with a tenant_id column but no policy
 * is caught.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { asSystem, assertTenantTablesGuarded, ElevatedAccess, unguardedTenantTables } from "../../src/db/RowSecurity.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { forEachBackend, startTestApp, type TestApp } from "../support/app.js"

/** What the service's own code gets: no operator access (the harness's `run` has it). */
const asService = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.mapInputContext(self, (ctx: Context.Context<R>) => Context.omit(ElevatedAccess)(ctx) as Context.Context<R>)

const inScope = (scope: TenantScope) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  asService(Effect.provideService(self, CurrentTenant, scope))

forEachBackend(["pglite", "postgres"], (backend) => {
  if (backend === "clickhouse") return
  describe(`row-level security on ${backend}`, () => {
    let app: TestApp
    let other: { apiKey: string; scope: TenantScope }
    beforeAll(async () => {
      app = await startTestApp({ backend })
      other = await app.newTenant("other")
      for (const [apiKey, ids] of [[app.apiKey, ["a-1", "a-2"]], [other.apiKey, ["b-1"]]] as const)
        for (const id of ids) expect((await app.request("POST", "/v1/customers", { external_id: id }, { apiKey })).status).toBe(201)
    }, 60_000)
    afterAll(() => app?.dispose())

    const unfiltered = Effect.flatMap(PgClient.PgClient, (sql) =>
      sql<{ externalId: string }>`SELECT external_id FROM customers ORDER BY external_id`
    ).pipe(Effect.map((rows) => rows.map((r) => r.externalId)))

    it("a query without a tenant filter sees only the scope's tenant", async () => {
      expect(await app.run(unfiltered.pipe(inScope(app.scope)))).toEqual(["a-1", "a-2"])
      expect(await app.run(unfiltered.pipe(inScope(other.scope)))).toEqual(["b-1"])
      // the operator (table owner) sees both: the rows are there
      expect(await app.run(unfiltered)).toEqual(["a-1", "a-2", "b-1"])
    })

    it("outside any tenant scope a query sees no tenant rows at all", async () => {
      expect(await app.run(unfiltered.pipe(asService))).toEqual([])
      const keys = await app.run(
        Effect.flatMap(PgClient.PgClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM api_keys`).pipe(asService)
      )
      expect(keys).toEqual([{ n: 0 }])
    })

    it("a tenant scope cannot write another tenant's row, nor change one", async () => {
      const write = Effect.flatMap(PgClient.PgClient, (sql) =>
        sql`INSERT INTO customers (id, tenant_id, environment_id, external_id)
          VALUES ('cus_rls_probe', ${other.scope.tenantId}, ${other.scope.environmentId}, 'planted')`
      )
      const exit = await app.run(Effect.exit(write.pipe(inScope(app.scope))))
      expect(Exit.isFailure(exit)).toBe(true)
      const renamed = await app.run(
        Effect.flatMap(PgClient.PgClient, (sql) => sql`UPDATE customers SET name = 'renamed' RETURNING id`).pipe(inScope(app.scope))
      )
      expect(renamed).toHaveLength(2)
      const untouched = await app.run(
        Effect.flatMap(PgClient.PgClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE name = 'renamed'`).pipe(
          inScope(other.scope)
        )
      )
      expect(untouched).toEqual([{ n: 0 }])
    })

    it("queries run as the service roles, neither superuser nor table owner", async () => {
      const who = Effect.flatMap(PgClient.PgClient, (sql) =>
        sql<{ who: string; superuser: boolean; bypass: boolean }>`SELECT current_user AS who, r.rolsuper AS superuser, r.rolbypassrls AS bypass
          FROM pg_roles r WHERE r.rolname = current_user`
      )
      expect(await app.run(who.pipe(inScope(app.scope)))).toEqual([{ who: "flexprice_app", superuser: false, bypass: false }])
      expect(await app.run(who.pipe(asService))).toEqual([{ who: "flexprice_app", superuser: false, bypass: false }])
      expect(await app.run(who.pipe(asSystem("test"), asService))).toEqual([{ who: "flexprice_system", superuser: false, bypass: true }])
      const owners = await app.run(
        Effect.flatMap(PgClient.PgClient, (sql) =>
          sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = current_schema()
            AND tableowner IN ('flexprice_app', 'flexprice_system')`
        )
      )
      expect(owners).toEqual([{ n: 0 }])
    })

    it("every table with a tenant_id column has a policy, and a new one without is caught", async () => {
      expect(await app.run(unguardedTenantTables)).toEqual([])
      await app.run(Effect.flatMap(PgClient.PgClient, (sql) => sql`CREATE TABLE rls_probe (tenant_id text NOT NULL, v int)`))
      try {
        expect(await app.run(unguardedTenantTables)).toEqual(["rls_probe"])
        const exit = await app.run(Effect.exit(assertTenantTablesGuarded))
        expect(Exit.isFailure(exit) && String(exit.cause)).toContain("rls_probe")
        await app.run(Effect.flatMap(PgClient.PgClient, (sql) => sql`SELECT flexprice_tenant_rls('rls_probe')`))
        expect(await app.run(unguardedTenantTables)).toEqual([])
      } finally {
        await app.run(Effect.flatMap(PgClient.PgClient, (sql) => sql`DROP TABLE rls_probe`))
      }
    })
  })
})

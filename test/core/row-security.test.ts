/**
 * Row-level security, the second wall (migration 0012, src/db/RowSecurity.ts): a query that
 * forgets its tenant filter sees only its own tenant's rows, or none outside any tenant scope,
 * on PGlite and on a PostgreSQL server; and a later table with a tenant_id column but no policy
 * is caught.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Context, Effect, Exit, Layer } from "effect"
import { expect } from "vitest"
import { asSystem, assertTenantTablesGuarded, ElevatedAccess, unguardedTenantTables } from "../../src/db/RowSecurity.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, newTenant, TestTenant } from "../support/TestApp.js"

/** What the service's own code gets: no operator access (the layer gives the test's effects it). */
const asService = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.mapInputContext(self, (ctx: Context.Context<R>) => Context.omit(ElevatedAccess)(ctx) as Context.Context<R>)

const inScope = (scope: TenantScope) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  asService(Effect.provideService(self, CurrentTenant, scope))

/** A second tenant; the test tenant holds customers a-1 and a-2, the other b-1 (made over HTTP). */
class Other extends Context.Tag("test/OtherTenant")<Other, { readonly scope: TenantScope }>() {}

const twoTenants = Layer.effect(
  Other,
  Effect.gen(function* () {
    const other = yield* newTenant("other")
    const api = yield* ApiClient
    for (const [client, ids] of [[api, ["a-1", "a-2"]], [other.client, ["b-1"]]] as const)
      for (const id of ids) {
        const [, response] = yield* client.customers.create({ payload: { external_id: id }, withResponse: true })
        expect(response.status).toBe(201)
      }
    return { scope: other.scope }
  })
)

const unfiltered = Effect.flatMap(PgClient.PgClient, (sql) => sql<{ externalId: string }>`SELECT external_id FROM customers ORDER BY external_id`).pipe(
  Effect.map((rows) => rows.map((r) => r.externalId))
)

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(twoTenants.pipe(Layer.provideMerge(TestApp.layer({ backend }))), { excludeTestServices: true })(`row-level security on ${backend}`, (it) => {
    it.effect("a query without a tenant filter sees only the scope's tenant", () =>
      Effect.gen(function* () {
        const mine = (yield* TestTenant).scope
        const other = (yield* Other).scope
        expect(yield* unfiltered.pipe(inScope(mine))).toEqual(["a-1", "a-2"])
        expect(yield* unfiltered.pipe(inScope(other))).toEqual(["b-1"])
        // the operator (table owner) sees both: the rows are there
        expect(yield* unfiltered).toEqual(["a-1", "a-2", "b-1"])
      })
    )

    it.effect("outside any tenant scope a query sees no tenant rows at all", () =>
      Effect.gen(function* () {
        expect(yield* unfiltered.pipe(asService)).toEqual([])
        const keys = yield* Effect.flatMap(PgClient.PgClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM api_keys`).pipe(asService)
        expect(keys).toEqual([{ n: 0 }])
      })
    )

    it.effect("a tenant scope cannot write another tenant's row, nor change one", () =>
      Effect.gen(function* () {
        const mine = (yield* TestTenant).scope
        const other = (yield* Other).scope
        const write = Effect.flatMap(PgClient.PgClient, (sql) =>
          sql`INSERT INTO customers (id, tenant_id, environment_id, external_id)
            VALUES ('cus_rls_probe', ${other.tenantId}, ${other.environmentId}, 'planted')`
        )
        const exit = yield* Effect.exit(write.pipe(inScope(mine)))
        expect(Exit.isFailure(exit)).toBe(true)
        const renamed = yield* Effect.flatMap(PgClient.PgClient, (sql) => sql`UPDATE customers SET name = 'renamed' RETURNING id`).pipe(inScope(mine))
        expect(renamed).toHaveLength(2)
        const untouched = yield* Effect.flatMap(PgClient.PgClient, (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE name = 'renamed'`).pipe(
          inScope(other)
        )
        expect(untouched).toEqual([{ n: 0 }])
      })
    )

    it.effect("queries run as the service roles, neither superuser nor table owner", () =>
      Effect.gen(function* () {
        const mine = (yield* TestTenant).scope
        const who = Effect.flatMap(PgClient.PgClient, (sql) =>
          sql<{ who: string; superuser: boolean; bypass: boolean }>`SELECT current_user AS who, r.rolsuper AS superuser, r.rolbypassrls AS bypass
            FROM pg_roles r WHERE r.rolname = current_user`
        )
        expect(yield* who.pipe(inScope(mine))).toEqual([{ who: "flexprice_app", superuser: false, bypass: false }])
        expect(yield* who.pipe(asService)).toEqual([{ who: "flexprice_app", superuser: false, bypass: false }])
        expect(yield* who.pipe(asSystem("test"), asService)).toEqual([{ who: "flexprice_system", superuser: false, bypass: true }])
        const owners = yield* Effect.flatMap(PgClient.PgClient, (sql) =>
          sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = current_schema()
            AND tableowner IN ('flexprice_app', 'flexprice_system')`
        )
        expect(owners).toEqual([{ n: 0 }])
      })
    )

    it.effect("every table with a tenant_id column has a policy, and a new one without is caught", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        expect(yield* unguardedTenantTables).toEqual([])
        yield* sql`CREATE TABLE rls_probe (tenant_id text NOT NULL, v int)`
        yield* Effect.gen(function* () {
          expect(yield* unguardedTenantTables).toEqual(["rls_probe"])
          const exit = yield* Effect.exit(assertTenantTablesGuarded)
          expect(Exit.isFailure(exit) && String(exit.cause)).toContain("rls_probe")
          yield* sql`SELECT flexprice_tenant_rls('rls_probe')`
          expect(yield* unguardedTenantTables).toEqual([])
        }).pipe(Effect.ensuring(Effect.orDie(sql`DROP TABLE rls_probe`)))
      })
    )
  })
})

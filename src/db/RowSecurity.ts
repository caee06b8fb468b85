/**
 * Row-level security, the second wall between tenants (migration 0012 has the policies).
 *
 * Every query runs as one of three database roles, chosen from the Effect context of the fiber
 * that asks for a connection:
 * - CurrentTenant present → `flexprice_app` with `flexprice.tenant_id` / `flexprice.environment_id`
 *   set to that scope: the policies admit only that tenant environment's rows, whatever the SQL.
 * - `asSystem(reason)` (no CurrentTenant) → `flexprice_system` (BYPASSRLS, DML only), for the
 *   few jobs that work across tenants by design and enumerate them.
 * - `asOwner(reason)` → the connecting user (owner of the tables): migrations and an operator's
 *   inspection (tests), nothing in the request or job paths.
 * - neither → `flexprice_app` with empty settings: no tenant row is visible or writable.
 *
 * The role and settings are applied to a pooled connection each time it is handed to a
 * statement or a transaction (pool checkout), and only when they differ from what that
 * connection already has, so a connection serving one tenant pays nothing per statement. They
 * are session settings rather than `SET LOCAL`: statements outside a transaction would otherwise
 * each need BEGIN/set/COMMIT around them, and a checkout is the only point where a connection
 * changes hands. A transaction keeps the access it started with.
 *
 * This wall stops a query that forgets its tenant filter; it does not stop SQL that switches
 * role itself (`RESET ROLE`), which no code here issues and every value is a bound parameter.
 */
import { SqlClient } from "@effect/sql"
import { Context, Data, Effect, Fiber, Option } from "effect"
import { createRequire } from "node:module"
import { type EnvironmentId, type TenantId, TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"

/** Elevated access for cross-tenant work; see the module comment. */
export class ElevatedAccess extends Context.Tag("flexprice/ElevatedAccess")<
  ElevatedAccess,
  { readonly role: "system" | "owner"; readonly reason: string }
>() {}

const elevate =
  (role: "system" | "owner", reason: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, ElevatedAccess>> =>
    Effect.mapInputContext(self, (ctx: Context.Context<Exclude<R, ElevatedAccess>>) =>
      // A tenant scope would win over the elevation (the safer reading), so it is dropped here.
      Context.add(Context.omit(CurrentTenant)(ctx), ElevatedAccess, { role, reason }) as unknown as Context.Context<R>
    )

/**
 * Run across tenants as `flexprice_system` (bypasses RLS). Only for work that enumerates
 * tenants or must find the tenant first (API key lookup, routing a Stripe delivery).
 * CurrentTenant is not available inside.
 */
export const asSystem = (reason: string) => elevate("system", reason)

/** Run as the table owner: migrations, table maintenance and an operator's inspection only. */
export const asOwner = (reason: string) => elevate("owner", reason)

/** Run inside an explicit tenant environment's scope (a scope named by a URL or a job row). */
export const inTenant =
  (scope: { readonly tenantId: string; readonly environmentId: string }) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, CurrentTenant>> =>
    Effect.provideService(
      self,
      CurrentTenant,
      // The values only become the connection's settings: an id of the wrong shape matches no row.
      TenantScope.make(
        { tenantId: scope.tenantId as TenantId, environmentId: scope.environmentId as EnvironmentId },
        { disableValidation: true }
      )
    )

/**
 * Runs `run` once per tenant environment among `rows`, each inside that scope (a store write
 * whose rows name their tenant); normally there is exactly one.
 */
export const perTenant = <T extends { readonly tenantId: string; readonly environmentId: string }, A, E, R>(
  rows: ReadonlyArray<T>,
  run: (rows: ReadonlyArray<T>) => Effect.Effect<ReadonlyArray<A>, E, R>
): Effect.Effect<ReadonlyArray<A>, E, Exclude<R, CurrentTenant>> => {
  const groups = new Map<string, Array<T>>()
  for (const row of rows) {
    const key = JSON.stringify([row.tenantId, row.environmentId])
    const group = groups.get(key)
    if (group) group.push(row)
    else groups.set(key, [row])
  }
  return Effect.map(
    Effect.forEach([...groups.values()], (group) => inTenant(group[0]!)(run(group))),
    (results) => results.flat()
  )
}

interface Access {
  readonly key: string
  readonly role: string
  readonly tenantId: string
  readonly environmentId: string
}

const NO_TENANT: Access = { key: "none", role: "flexprice_app", tenantId: "", environmentId: "" }
const SYSTEM: Access = { key: "system", role: "flexprice_system", tenantId: "", environmentId: "" }
const OWNER: Access = { key: "owner", role: "none", tenantId: "", environmentId: "" }

/** The access of the fiber running right now (pool checkouts happen synchronously inside one). */
const currentAccess = (): Access => {
  const fiber = Fiber.getCurrentFiber()
  if (Option.isNone(fiber)) return NO_TENANT
  const ctx = fiber.value.currentContext
  const tenant = Context.getOption(ctx, CurrentTenant)
  if (Option.isSome(tenant)) {
    const { tenantId, environmentId } = tenant.value
    return { key: `tenant:${tenantId}/${environmentId}`, role: "flexprice_app", tenantId, environmentId }
  }
  const elevated = Context.getOption(ctx, ElevatedAccess)
  if (Option.isSome(elevated)) return elevated.value.role === "system" ? SYSTEM : OWNER
  return NO_TENANT
}

type Callback = (err: Error | undefined, client?: PoolClient, release?: (err?: Error | boolean) => void) => void
interface PoolClient {
  query(text: string, values: ReadonlyArray<unknown>, cb: (err: Error | undefined) => void): void
}
interface PoolBase {
  connect(cb?: Callback): unknown
  query(...args: ReadonlyArray<unknown>): unknown
  on(event: "error", listener: (err: Error) => void): unknown
  end(): Promise<void>
}
type PoolConstructor = new (config: Record<string, unknown>) => PoolBase

// `pg` ships no type declarations; only the pool methods used here are typed.
const pg = createRequire(import.meta.url)("pg") as { Pool: PoolConstructor }

const APPLY = `SELECT set_config('role', $1, false), set_config('flexprice.tenant_id', $2, false),
  set_config('flexprice.environment_id', $3, false)`

/** A `pg` pool that applies the checking-out fiber's access to each connection it hands out. */
export class TenantScopedPool extends pg.Pool {
  readonly #applied = new WeakMap<PoolClient, string>()
  #cancelling = false

  // @effect/sql-pg cancels an interrupted statement through `pool.query`; the owner may signal
  // its own backends, the two roles may not.
  override query(...args: ReadonlyArray<unknown>): unknown {
    if (typeof args[0] !== "string" || !args[0].startsWith("SELECT pg_cancel_backend(")) return super.query(...args)
    this.#cancelling = true
    try {
      return super.query(...args)
    } finally {
      this.#cancelling = false
    }
  }

  override connect(cb?: Callback): unknown {
    const access = this.#cancelling ? OWNER : currentAccess()
    if (cb === undefined)
      return new Promise((resolve, reject) => this.#checkout(access, (err, client) => (err ? reject(err) : resolve(client))))
    this.#checkout(access, cb)
    return undefined
  }

  #checkout(access: Access, cb: Callback): void {
    super.connect((err, client, release) => {
      if (err || client === undefined || this.#applied.get(client) === access.key) return cb(err, client, release)
      client.query(APPLY, [access.role, access.tenantId, access.environmentId], (applyErr) => {
        if (applyErr) {
          this.#applied.delete(client)
          release?.(applyErr)
          return cb(applyErr)
        }
        this.#applied.set(client, access.key)
        cb(undefined, client, release)
      })
    })
  }
}

export class UnguardedTenantTables extends Data.TaggedError("UnguardedTenantTables")<{ readonly tables: ReadonlyArray<string> }> {
  override get message() {
    return `tables with a tenant_id column but no row-level security policy: ${this.tables.join(", ")} — end the migration that creates each with SELECT flexprice_tenant_rls('<table>'); (migrations/0012_row_level_security.sql)`
  }
}

/** Tables of the current schema that have a tenant_id column but no RLS or no policy. */
export const unguardedTenantTables = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
       AND (NOT c.relrowsecurity OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
     ORDER BY c.relname`
  return rows.map((r) => r.name)
})

/** Refuses to start while a tenant table is unguarded (a later migration forgot its policy). */
export const assertTenantTablesGuarded = Effect.flatMap(unguardedTenantTables, (tables) =>
  tables.length === 0 ? Effect.void : Effect.fail(new UnguardedTenantTables({ tables }))
)

/**
 * What a chunk of linking reads does not grow with the tenant (issue #15 item 4): with a tenant
 * holding many customers and mappings, `CustomerLinker.linkMany` and
 * `MigrationJobRepo.mappingsTouching` read rows by index lookups — about the rows they link —
 * and never every mapping of the tenant. A CSV import runs both once per chunk, so a statement
 * that scanned the tenant made each chunk slower than the one before (a 10 MB import did not
 * finish). Measured in rows read, from the transaction's own table statistics
 * (`pg_stat_xact_user_tables`), not in time; after planner statistics are refreshed, as an import
 * does (PGlite runs no autovacuum).
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { CustomerLinker, type LinkManyInput } from "../../src/customers/CustomerLinker.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { MigrationJobRepo } from "../../src/repositories/MigrationJobRepo.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { TestTenant } from "../support/TestApp.js"

/**
 * Customers and mappings the tenant already holds, and the rows linked at once: enough stored
 * rows that a plan scanning them costs the planner more than the chunk's index lookups (below a
 * few thousand rows a scan is the cheaper plan, and a correct one).
 */
const STORED = 20_000
const CHUNK = 10
/** Rows read per row linked, at most: a few index lookups each (a scan reads STORED). */
const READS_PER_ROW = 10
const pad = (n: number) => String(n).padStart(7, "0")

/** Tuples read from customers and mappings so far in this transaction (heap scans + index fetches). */
const rowsRead = Effect.gen(function* () {
  const sql = yield* PgClient.PgClient
  const rows = yield* sql<{ relname: string; read: string }>`SELECT relname, (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::text AS read
    FROM pg_stat_xact_user_tables WHERE relname IN ('customers', 'customer_integration_mappings')`
  return Object.fromEntries(rows.map((r) => [r.relname, Number(r.read)])) as Record<string, number>
})

/** The test tenant filled by the table owner (test operator), then planner statistics refreshed as an import does. */
const filled = Layer.effectDiscard(
  Effect.gen(function* () {
    const { tenantId, environmentId } = (yield* TestTenant).scope
    const sql = yield* PgClient.PgClient
    yield* sql`INSERT INTO customers (id, tenant_id, environment_id, external_id)
      SELECT 'cust_r' || lpad(i::text, 7, '0'), ${tenantId}, ${environmentId}, 'ext-' || lpad(i::text, 7, '0')
      FROM generate_series(0, ${STORED - 1}) i`
    yield* sql`INSERT INTO customer_integration_mappings (id, tenant_id, environment_id, customer_id, provider_type, provider_customer_id, status, source)
      SELECT 'map_r' || lpad(i::text, 7, '0'), ${tenantId}, ${environmentId}, 'cust_r' || lpad(i::text, 7, '0'), 'stripe', 'cus_N' || lpad(i::text, 7, '0'), 'active', 'api'
      FROM generate_series(0, ${STORED - 1}) i`
    yield* (yield* MigrationJobRepo).refreshStatistics
  })
)

/** `effect` in one transaction, in the test tenant's environment. */
const inTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const { scope } = yield* TestTenant
    const sql = yield* PgClient.PgClient
    return yield* sql.withTransaction(effect).pipe(Effect.provideService(CurrentTenant, scope))
  })

/** Half the chunk already mapped exactly so, half new customers; the last two conflict. */
const chunk = (dryRun: boolean): ReadonlyArray<LinkManyInput> =>
  Array.from({ length: CHUNK }, (_, k) => {
    const i = k < CHUNK / 2 ? 1000 + k : STORED + k
    const stripe = k >= CHUNK - 2 ? `cus_N${pad(k)}` : `cus_N${pad(i)}`
    return {
      externalId: `ext-${pad(i)}`,
      stripeCustomerId: stripe,
      name: null,
      email: null,
      source: "csv" as const,
      migrationId: "mig_reads",
      createCustomer: true,
      onConflict: "skip" as const,
      dryRun
    }
  })

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(filled.pipe(Layer.provideMerge(TestApp.layer({ backend }))), { excludeTestServices: true })(`a chunk's reads on ${backend} with ${STORED} stored mappings`, (it) => {
    for (const dryRun of [true, false])
      it.effect(`linkMany (dry run ${dryRun}) reads about the rows it links, not the tenant's`, () =>
        Effect.gen(function* () {
          const { outcomes, read } = yield* inTransaction(
            Effect.gen(function* () {
              const outcomes = yield* (yield* CustomerLinker).linkMany(chunk(dryRun))
              return { outcomes, read: yield* rowsRead }
            })
          )
          // the chunk did meet stored rows: already mapped, new, and conflicts
          const kinds = outcomes.map((o) => o.mapping)
          expect(kinds.filter((k) => k === "unchanged")).toHaveLength(CHUNK / 2)
          expect(kinds.filter((k) => k === "conflict")).toHaveLength(2)
          expect(kinds.filter((k) => k === "created")).toHaveLength(CHUNK / 2 - 2)
          // a scan of the tenant's mappings would read all of them
          expect(read["customer_integration_mappings"] ?? 0).toBeLessThan(READS_PER_ROW * CHUNK)
          expect(read["customers"] ?? 0).toBeLessThan(READS_PER_ROW * CHUNK)
        })
      )

    it.effect("mappingsTouching reads about the rows it returns", () =>
      Effect.gen(function* () {
        const { found, read } = yield* inTransaction(
          Effect.gen(function* () {
            const ids = Array.from({ length: CHUNK }, (_, k) => 2000 + k)
            const touched = yield* (yield* MigrationJobRepo).mappingsTouching(
              ids.map((i) => `cus_N${pad(i)}`),
              ids.map((i) => `ext-${pad(i + 1)}`)
            )
            return { found: touched.snapshots.length, read: yield* rowsRead }
          })
        )
        expect(found).toBe(CHUNK + 1)
        expect(read["customer_integration_mappings"] ?? 0).toBeLessThan(READS_PER_ROW * CHUNK)
        expect(read["customers"] ?? 0).toBeLessThan(READS_PER_ROW * CHUNK)
      })
    )
  })
})

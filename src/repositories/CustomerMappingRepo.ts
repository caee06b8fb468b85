/**
 * FlexPrice customer ↔ Stripe customer (`customer_integration_mappings`). A deleted Stripe
 * customer keeps its row with status `deleted`, so its usage stops syncing but history stays.
 * Writes go through CustomerLinker; this is the storage only.
 */
import { SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, DbJson, orDieOnRow } from "../db/Rows.js"
import { textArray } from "../db/SqlArrays.js"
import { newId } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"

/** The table's CHECKs: a row with another value is a defect (`orDieOnRow`). */
export const MappingSource = Schema.Literal("api", "webhook", "migration", "csv")
export type MappingSource = typeof MappingSource.Type
const MappingStatus = Schema.Literal("active", "deleted")

export interface CustomerMappingRow {
  readonly id: string
  readonly customerId: string
  readonly providerCustomerId: string
  readonly status: "active" | "deleted"
  readonly source: MappingSource
  readonly migrationId: string | null
  readonly metadata: unknown
  readonly createdAt: Date
  readonly updatedAt: Date
}

/** A mapping as read (reads and RETURNING rows alike); metadata is the stored jsonb as the driver parsed it. */
const CustomerMappingRowSchema = Schema.Struct({
  id: Schema.String,
  customerId: Schema.String,
  providerCustomerId: Schema.String,
  status: MappingStatus,
  source: MappingSource,
  migrationId: Schema.NullOr(Schema.String),
  metadata: DbJson,
  createdAt: DbDate,
  updatedAt: DbDate
})
const decodeRows = Schema.decodeUnknown(Schema.Array(CustomerMappingRowSchema))

/** A row of `readForLinks`: a customer found by external id, or a mapping of one of them / of a Stripe customer. */
const LinkReadRow = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("customer"), id: Schema.String, customerId: Schema.String, externalId: Schema.String }),
  Schema.Struct({ kind: Schema.Literal("mapping"), id: Schema.String, customerId: Schema.String, providerCustomerId: Schema.String, status: MappingStatus })
)

export interface NewCustomerMapping {
  readonly customerId: string
  readonly providerCustomerId: string
  readonly source: MappingSource
  readonly migrationId?: string | null | undefined
  readonly metadata?: Record<string, unknown> | undefined
}

export class CustomerMappingRepo extends Effect.Service<CustomerMappingRepo>()("flexprice/CustomerMappingRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, customer_id, provider_customer_id, status, source, migration_id, metadata, created_at, updated_at`

    /** customer_id → stripe customer id, active mappings only (one text[] parameter: the sync asks per page of up to 10,000). */
    const activeByCustomerIds = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(new Map<string, string>() as ReadonlyMap<string, string>)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ customerId: string; providerCustomerId: string }>`SELECT customer_id, provider_customer_id
              FROM customer_integration_mappings
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
                AND status = 'active' AND customer_id = ANY(${textArray(ids)}::text[])`
          ).pipe(Effect.map((rows) => new Map(rows.map((r) => [r.customerId, r.providerCustomerId])) as ReadonlyMap<string, string>))

    /** The first row a write returned, decoded. */
    const firstRow = (rows: ReadonlyArray<unknown>): Effect.Effect<Option.Option<CustomerMappingRow>> =>
      Effect.map(Effect.orDie(decodeRows(rows)), (decoded) => Option.fromNullable(decoded[0]))

    /** The tenant's mapping by one of its two unique keys. */
    const findRow = SqlSchema.findOne({
      Request: Schema.Struct({ column: Schema.Literal("customer_id", "provider_customer_id"), value: Schema.String }),
      Result: CustomerMappingRowSchema,
      execute: ({ column, value }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM customer_integration_mappings
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
              AND ${sql(column)} = ${value}`
        )
    })

    const findByCustomerId = (customerId: string): Effect.Effect<Option.Option<CustomerMappingRow>, SqlError, CurrentTenant> =>
      orDieOnRow(findRow({ column: "customer_id", value: customerId }))

    const findByProviderCustomerId = (providerCustomerId: string): Effect.Effect<Option.Option<CustomerMappingRow>, SqlError, CurrentTenant> =>
      orDieOnRow(findRow({ column: "provider_customer_id", value: providerCustomerId }))

    /** Insert; `None` when either unique key is taken (a concurrent writer won: re-read). */
    const insert = (m: NewCustomerMapping) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO customer_integration_mappings ${sql.insert({
          id: newId.mapping(),
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          customerId: m.customerId,
          providerType: "stripe",
          providerCustomerId: m.providerCustomerId,
          metadata: JSON.stringify(m.metadata ?? {}),
          status: "active",
          source: m.source,
          migrationId: m.migrationId ?? null
        })} ON CONFLICT DO NOTHING RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstRow))

    /**
     * What a batch of links decides on: the customers with these external ids, and every row of
     * them or of these Stripe customers. ONE statement, so both come from the same snapshot: a
     * customer and its mapping created concurrently are seen together or not at all.
     *
     * The mappings come from two index lookups, one per unique key (a row found by both is read
     * twice and kept once). As one `customer_id IN (…) OR provider_customer_id = ANY(…)` the
     * planner filtered every mapping of the tenant on each call, so a CSV import's chunks grew
     * slower with every row imported before them (PGlite, 150,000 mappings: 350 – 670 ms a call;
     * split: 0.3 ms — BENCHMARKS.md, "Noisy neighbour"). The split plan needs planner statistics,
     * which PGlite only has after an ANALYZE (MigrationJobRepo.refreshStatistics).
     */
    const linkRows = SqlSchema.findAll({
      Request: Schema.Struct({ externalIds: Schema.Array(Schema.String), providerCustomerIds: Schema.Array(Schema.String) }),
      Result: LinkReadRow,
      execute: ({ externalIds, providerCustomerIds }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`
            WITH c AS (SELECT id, external_id FROM customers
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND external_id = ANY(${textArray(externalIds)}::text[]))
            SELECT 'customer' AS kind, c.id, c.id AS customer_id, c.external_id, NULL AS provider_customer_id, NULL AS status FROM c
            UNION ALL
            SELECT 'mapping', m.id, m.customer_id, NULL, m.provider_customer_id, m.status FROM customer_integration_mappings m
              WHERE m.tenant_id = ${t.tenantId} AND m.environment_id = ${t.environmentId} AND m.provider_type = 'stripe'
                AND m.customer_id = ANY(ARRAY(SELECT id FROM c))
            UNION ALL
            SELECT 'mapping', m.id, m.customer_id, NULL, m.provider_customer_id, m.status FROM customer_integration_mappings m
              WHERE m.tenant_id = ${t.tenantId} AND m.environment_id = ${t.environmentId} AND m.provider_type = 'stripe'
                AND m.provider_customer_id = ANY(${textArray(providerCustomerIds)}::text[])`
        )
    })
    const readForLinks = (externalIds: ReadonlyArray<string>, providerCustomerIds: ReadonlyArray<string>) =>
      orDieOnRow(linkRows({ externalIds, providerCustomerIds })).pipe(
        Effect.map((rows) => ({
          customerIds: new Map(rows.flatMap((r) => (r.kind === "customer" ? [[r.externalId, r.customerId] as const] : []))),
          mappings: [
            ...new Map(
              rows.flatMap((r) =>
                r.kind === "mapping" ? [[r.id, { id: r.id, customerId: r.customerId, providerCustomerId: r.providerCustomerId, status: r.status }] as const] : []
              )
            ).values()
          ]
        }))
      )

    /**
     * Insert several rows whose ids the caller chose. Returns the ids inserted; a row whose
     * customer or Stripe customer is already mapped is left out (a concurrent writer won: re-read).
     */
    const insertMany = (rows: ReadonlyArray<NewCustomerMapping & { readonly id: string }>) =>
      rows.length === 0
        ? Effect.succeed([] as ReadonlyArray<string>)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ id: string }>`INSERT INTO customer_integration_mappings
                (id, tenant_id, environment_id, customer_id, provider_type, provider_customer_id, metadata, status, source, migration_id)
              SELECT r.id, ${t.tenantId}, ${t.environmentId}, r.customer_id, 'stripe', r.provider_customer_id, r.metadata::jsonb, 'active', r.source, r.migration_id
              FROM unnest(${textArray(rows.map((m) => m.id))}::text[], ${textArray(rows.map((m) => m.customerId))}::text[],
                          ${textArray(rows.map((m) => m.providerCustomerId))}::text[], ${textArray(rows.map((m) => JSON.stringify(m.metadata ?? {})))}::text[],
                          ${textArray(rows.map((m) => m.source))}::text[], ${textArray(rows.map((m) => m.migrationId ?? null))}::text[])
                AS r(id, customer_id, provider_customer_id, metadata, source, migration_id)
              ON CONFLICT DO NOTHING RETURNING id`
          ).pipe(Effect.map((inserted) => inserted.map((r) => r.id) as ReadonlyArray<string>))

    /** Point an existing mapping row (by id) at a customer / Stripe customer, and make it active. */
    const reassign = (id: string, patch: { readonly customerId: string; readonly providerCustomerId: string; readonly source: MappingSource; readonly migrationId?: string | null | undefined }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE customer_integration_mappings SET
            customer_id = ${patch.customerId}, provider_customer_id = ${patch.providerCustomerId},
            status = 'active', source = ${patch.source}, migration_id = ${patch.migrationId ?? null}, updated_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}
          RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstRow))

    /** Remove a row outright (overwrite clears the row in the way; rollback of a migration). */
    const removeById = (id: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`DELETE FROM customer_integration_mappings
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id} RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    /** Mark a Stripe customer's mapping deleted. True when an active mapping changed. */
    const markDeletedByProviderCustomerId = (providerCustomerId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE customer_integration_mappings SET status = 'deleted', updated_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
            AND provider_customer_id = ${providerCustomerId} AND status = 'active'
          RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    /** Mark a FlexPrice customer's active mapping deleted (DELETE API). The row, if changed. */
    const markDeletedByCustomerId = (customerId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE customer_integration_mappings SET status = 'deleted', updated_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
            AND customer_id = ${customerId} AND status = 'active'
          RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstRow))

    const listRows = SqlSchema.findAll({
      Request: Schema.Struct({ limit: Schema.Int, after: Schema.optional(Schema.String), status: Schema.optional(MappingStatus) }),
      Result: CustomerMappingRowSchema,
      execute: (opts) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM customer_integration_mappings
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
              ${opts.status ? sql`AND status = ${opts.status}` : sql``}
              ${opts.after ? sql`AND id > ${opts.after}` : sql``}
            ORDER BY id LIMIT ${opts.limit}`
        )
    })
    const list = (opts: {
      readonly limit: number
      readonly after?: string | undefined
      readonly status?: "active" | "deleted" | undefined
    }): Effect.Effect<ReadonlyArray<CustomerMappingRow>, SqlError, CurrentTenant> =>
      orDieOnRow(listRows({ limit: opts.limit, ...(opts.after ? { after: opts.after } : {}), ...(opts.status ? { status: opts.status } : {}) }))

    return {
      activeByCustomerIds,
      findByCustomerId,
      findByProviderCustomerId,
      readForLinks,
      insert,
      insertMany,
      reassign,
      removeById,
      markDeletedByProviderCustomerId,
      markDeletedByCustomerId,
      list
    } as const
  })
}) {}

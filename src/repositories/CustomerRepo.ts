/**
 * Customers of the current tenant environment. Every statement filters by tenant and
 * environment taken from CurrentTenant.
 */
import { SqlError, SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { textArray } from "../db/SqlArrays.js"
import { CustomerId, newId } from "../domain/Ids.js"

export interface CustomerRow {
  readonly id: CustomerId
  readonly externalId: string
  readonly name: string | null
  readonly email: string | null
  readonly metadata: Record<string, string>
  readonly createdAt: Date
  readonly updatedAt: Date
}

/**
 * A customer as read. The id is branded, not re-validated: ids are checked where they are made,
 * and a row planted by an operator (or a test of row-level security) must still read.
 */
const CustomerRowSchema = Schema.Struct({
  id: Schema.String.pipe(Schema.brand("CustomerId")),
  externalId: Schema.String,
  name: Schema.NullOr(Schema.String),
  email: Schema.NullOr(Schema.String),
  metadata: Schema.Record({ key: Schema.String, value: Schema.String }),
  createdAt: DbDate,
  updatedAt: DbDate
})
const decodeRows = Schema.decodeUnknown(Schema.Array(CustomerRowSchema))

export interface NewCustomer {
  readonly externalId: string
  readonly name?: string | null | undefined
  readonly email?: string | null | undefined
  readonly metadata?: Record<string, string> | undefined
}

const isUniqueViolation = (e: SqlError.SqlError) => (e.cause as { code?: string } | undefined)?.code === "23505"

export class CustomerRepo extends Effect.Service<CustomerRepo>()("flexprice/CustomerRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, external_id, name, email, metadata, created_at, updated_at`

    const findRow = SqlSchema.findOne({
      Request: Schema.Union(Schema.Struct({ id: Schema.String }), Schema.Struct({ externalId: Schema.String })),
      Result: CustomerRowSchema,
      execute: (by) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM customers
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND ${"id" in by ? sql`id = ${by.id}` : sql`external_id = ${by.externalId}`}`
        )
    })
    const findById = (id: string): Effect.Effect<Option.Option<CustomerRow>, SqlError.SqlError, CurrentTenant> => orDieOnRow(findRow({ id }))
    const findByExternalId = (externalId: string): Effect.Effect<Option.Option<CustomerRow>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(findRow({ externalId }))
    /** The first row a write returned, decoded. */
    const firstRow = (rows: ReadonlyArray<unknown>): Effect.Effect<Option.Option<CustomerRow>> =>
      Effect.map(Effect.orDie(decodeRows(rows)), (decoded) => Option.fromNullable(decoded[0]))

    /** Map external ids → customer ids for a batch of events (one query). */
    const idsByExternalIds = (externalIds: ReadonlyArray<string>) =>
      externalIds.length === 0
        ? Effect.succeed(new Map<string, string>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ id: string; externalId: string }>`SELECT id, external_id FROM customers
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND external_id = ANY(${textArray(externalIds)}::text[])`
          ).pipe(Effect.map((rows) => new Map(rows.map((r) => [r.externalId, r.id]))))

    /** Insert; `None` when the external id is taken (the caller decides: 409 or find). */
    const insert = (c: NewCustomer) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO customers ${sql.insert({
          id: newId.customer(),
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          externalId: c.externalId,
          name: c.name ?? null,
          email: c.email ?? null,
          metadata: JSON.stringify(c.metadata ?? {})
        })} ON CONFLICT (tenant_id, environment_id, external_id) DO NOTHING RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstRow))

    /**
     * Insert several customers whose ids the caller chose (a batch refers to them before they
     * exist). Returns the ids inserted; an external_id already taken is left out, as in `insert`.
     */
    const insertMany = (rows: ReadonlyArray<NewCustomer & { readonly id: CustomerId }>) =>
      rows.length === 0
        ? Effect.succeed([] as ReadonlyArray<CustomerId>)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ id: CustomerId }>`INSERT INTO customers (id, tenant_id, environment_id, external_id, name, email, metadata)
              SELECT r.id, ${t.tenantId}, ${t.environmentId}, r.external_id, r.name, r.email, r.metadata::jsonb
              FROM unnest(${textArray(rows.map((c) => c.id))}::text[], ${textArray(rows.map((c) => c.externalId))}::text[],
                          ${textArray(rows.map((c) => c.name ?? null))}::text[], ${textArray(rows.map((c) => c.email ?? null))}::text[],
                          ${textArray(rows.map((c) => JSON.stringify(c.metadata ?? {})))}::text[])
                AS r(id, external_id, name, email, metadata)
              ON CONFLICT (tenant_id, environment_id, external_id) DO NOTHING RETURNING id`
          ).pipe(Effect.map((inserted) => inserted.map((r) => r.id) as ReadonlyArray<CustomerId>))

    const update = (id: string, patch: { name?: string | null | undefined; email?: string | null | undefined; metadata?: Record<string, string> | undefined }) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE customers SET
            name = CASE WHEN ${patch.name !== undefined} THEN ${patch.name ?? null} ELSE name END,
            email = CASE WHEN ${patch.email !== undefined} THEN ${patch.email ?? null} ELSE email END,
            metadata = CASE WHEN ${patch.metadata !== undefined} THEN ${JSON.stringify(patch.metadata ?? {})}::jsonb ELSE metadata END,
            updated_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}
          RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstRow))

    const remove = (id: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`DELETE FROM customers WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id} RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    const listRows = SqlSchema.findAll({
      Request: Schema.Struct({ limit: Schema.Int, after: Schema.optional(Schema.String) }),
      Result: CustomerRowSchema,
      execute: (opts) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM customers
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              ${opts.after ? sql`AND id > ${opts.after}` : sql``}
            ORDER BY id LIMIT ${opts.limit}`
        )
    })
    const list = (opts: { readonly limit: number; readonly after?: string | undefined }): Effect.Effect<ReadonlyArray<CustomerRow>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(listRows({ limit: opts.limit, ...(opts.after ? { after: opts.after } : {}) }))

    return { findById, findByExternalId, idsByExternalIds, insert, insertMany, update, remove, list, isUniqueViolation } as const
  })
}) {}

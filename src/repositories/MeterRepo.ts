/**
 * Meters of the current tenant environment.
 *
 * `listForIngest` serves the ingest path from a small in-process cache (every bulk request needs
 * the meter list). A create or delete in this process drops the environment's entry at once; on
 * another replica the entry lives at most FLEXPRICE_METER_CACHE_SECONDS (default 5, 0 = no cache),
 * so a meter created or deleted there takes effect on this replica's ingest within that bound,
 * as if the change had been made that much later (meters apply to events ingested after them).
 */
import { SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Clock, Config, Effect, Option, Schema } from "effect"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { MeterId, newId } from "../domain/Ids.js"
import type { MeterRule } from "../domain/Metering.js"
import { AggregationType, type MeterCreate, MeterFilter } from "../domain/Models.js"

export interface MeterRow extends MeterRule {
  readonly id: MeterId
  readonly name: string
  readonly createdAt: Date
}

/** A stored meter as read: the aggregation a literal, the filters (jsonb) decoded, not cast. */
const MeterRowSchema = Schema.Struct({
  id: MeterId,
  name: Schema.String,
  eventName: Schema.String,
  aggregationType: AggregationType,
  aggregationField: Schema.NullOr(Schema.String),
  filters: Schema.Array(MeterFilter),
  createdAt: DbDate
})

export class MeterRepo extends Effect.Service<MeterRepo>()("flexprice/MeterRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, name, event_name, aggregation_type, aggregation_field, filters, created_at`
    const ttlMs = (yield* Config.integer("FLEXPRICE_METER_CACHE_SECONDS").pipe(Config.withDefault(5))) * 1000
    const MAX_CACHED = 10_000
    const cache = new Map<string, { readonly rows: ReadonlyArray<MeterRow>; readonly at: number }>()
    // bumped by every change in this process: a read that overlapped a change is not cached
    const generation = new Map<string, number>()
    const keyOf = (t: { readonly tenantId: string; readonly environmentId: string }) => `${t.tenantId}/${t.environmentId}`
    const invalidate = <A, E, R>(self: Effect.Effect<A, E, R>) =>
      Effect.flatMap(CurrentTenant, (t) => {
        const bump = Effect.sync(() => {
          const k = keyOf(t)
          cache.delete(k)
          generation.set(k, (generation.get(k) ?? 0) + 1)
        })
        return Effect.ensuring(Effect.zipRight(bump, self), bump)
      })
    const decodeRow = Schema.decodeUnknown(MeterRowSchema)

    const create = (m: MeterCreate) =>
      invalidate(Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO meters ${sql.insert({
          id: newId.meter(),
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          name: m.name,
          eventName: m.event_name,
          aggregationType: m.aggregation.type,
          aggregationField: m.aggregation.type === "COUNT" ? null : (m.aggregation.field ?? null),
          filters: JSON.stringify(m.filters ?? [])
        })} RETURNING ${cols}`
      ).pipe(Effect.flatMap((rows) => Effect.orDie(decodeRow(rows[0])))))

    const findRow = SqlSchema.findOne({
      Request: Schema.String,
      Result: MeterRowSchema,
      execute: (id) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM meters WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND id = ${id} AND deleted_at IS NULL`
        )
    })
    const findById = (id: string): Effect.Effect<Option.Option<MeterRow>, SqlError, CurrentTenant> => orDieOnRow(findRow(id))

    const listRows = SqlSchema.findAll({
      Request: Schema.Void,
      Result: MeterRowSchema,
      execute: () =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM meters WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND deleted_at IS NULL ORDER BY created_at, id`
        )
    })
    const list: Effect.Effect<ReadonlyArray<MeterRow>, SqlError, CurrentTenant> = orDieOnRow(listRows(undefined))

    /** Soft delete: processed rows keep pointing at the meter id. */
    const remove = (id: string) =>
      invalidate(Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE meters SET deleted_at = now() WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          AND id = ${id} AND deleted_at IS NULL RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0)))

    /** `list`, cached per environment for the ingest path (see the module comment). */
    const listForIngest = Effect.gen(function* () {
      if (ttlMs <= 0) return yield* list
      const k = keyOf(yield* CurrentTenant)
      const now = yield* Clock.currentTimeMillis
      const hit = cache.get(k)
      if (hit !== undefined && now - hit.at < ttlMs) return hit.rows
      const gen = generation.get(k) ?? 0
      const rows = yield* list
      if ((generation.get(k) ?? 0) === gen) {
        cache.delete(k)
        if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!)
        cache.set(k, { rows, at: now })
      }
      return rows
    })

    return { create, findById, list, listForIngest, remove } as const
  })
}) {}


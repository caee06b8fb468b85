/** Meters of the current tenant environment. */
import { PgClient } from "@effect/sql-pg"
import { Effect, Option } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import { MeterId, newId } from "../domain/Ids.js"
import type { MeterRule } from "../domain/Metering.js"
import type { MeterCreate, MeterFilter } from "../domain/Models.js"

export interface MeterRow extends MeterRule {
  readonly id: MeterId
  readonly name: string
  readonly createdAt: Date
}

export class MeterRepo extends Effect.Service<MeterRepo>()("flexprice/MeterRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, name, event_name, aggregation_type, aggregation_field, filters, created_at`
    type Raw = Omit<MeterRow, "filters"> & { filters: ReadonlyArray<MeterFilter> }

    const create = (m: MeterCreate) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<Raw>`INSERT INTO meters ${sql.insert({
          id: newId.meter(),
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          name: m.name,
          eventName: m.event_name,
          aggregationType: m.aggregation.type,
          aggregationField: m.aggregation.type === "COUNT" ? null : (m.aggregation.field ?? null),
          filters: JSON.stringify(m.filters ?? [])
        })} RETURNING ${cols}`
      ).pipe(Effect.map((rows) => rows[0]! as MeterRow))

    const findById = (id: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<Raw>`SELECT ${cols} FROM meters WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          AND id = ${id} AND deleted_at IS NULL`
      ).pipe(Effect.map((rows) => Option.fromNullable(rows[0] as MeterRow | undefined)))

    const list = Effect.flatMap(CurrentTenant, (t) =>
      sql<Raw>`SELECT ${cols} FROM meters WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
        AND deleted_at IS NULL ORDER BY created_at, id`
    ).pipe(Effect.map((rows) => rows as ReadonlyArray<MeterRow>))

    /** Soft delete: processed rows keep pointing at the meter id. */
    const remove = (id: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE meters SET deleted_at = now() WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          AND id = ${id} AND deleted_at IS NULL RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    return { create, findById, list, remove } as const
  })
}) {}


/**
 * FlexPrice meter → Stripe billing meter (`meter_provider_mappings`), per tenant environment.
 * The Stripe meter's event name, payload keys and formula are copied at mapping time so the sync
 * pipeline needs no Stripe call to know how to send.
 */
import { SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import type { SqlError } from "@effect/sql/SqlError"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import { newId } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"

export interface MeterMapping {
  readonly meterId: string
  readonly providerMeterId: string
  readonly stripeEventName: string
  readonly customerPayloadKey: string
  readonly valuePayloadKey: string
  readonly formula: "sum" | "count" | "last"
  readonly wholeUnits: boolean
  readonly syncEnabled: boolean
}

export interface MeterMappingRow extends MeterMapping {
  readonly id: string
  readonly createdAt: Date
  readonly updatedAt: Date
}

/**
 * A stored mapping as read. The table's CHECK allows only the three formulas the sync knows; a row
 * with another would be a defect (`orDieOnRow`), never read as some default as it once was.
 */
const MeterMappingRowSchema = Schema.Struct({
  id: Schema.String,
  meterId: Schema.String,
  providerMeterId: Schema.String,
  stripeEventName: Schema.String,
  customerPayloadKey: Schema.String,
  valuePayloadKey: Schema.String,
  formula: Schema.Literal("sum", "count", "last"),
  wholeUnits: Schema.Boolean,
  syncEnabled: Schema.Boolean,
  createdAt: DbDate,
  updatedAt: DbDate
})

export const toMapping = (r: MeterMappingRow): MeterMapping => ({
  meterId: r.meterId,
  providerMeterId: r.providerMeterId,
  stripeEventName: r.stripeEventName,
  customerPayloadKey: r.customerPayloadKey,
  valuePayloadKey: r.valuePayloadKey,
  formula: r.formula,
  wholeUnits: r.wholeUnits,
  syncEnabled: r.syncEnabled
})

export class MeterMappingRepo extends Effect.Service<MeterMappingRepo>()("flexprice/MeterMappingRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, meter_id, provider_meter_id, stripe_event_name, customer_payload_key, value_payload_key, formula,
      whole_units, sync_enabled, created_at, updated_at`

    const listRows = SqlSchema.findAll({
      Request: Schema.Struct({ enabledOnly: Schema.Boolean }),
      Result: MeterMappingRowSchema,
      execute: ({ enabledOnly }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM meter_provider_mappings
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
              ${enabledOnly ? sql`AND sync_enabled = true` : sql``}
            ORDER BY meter_id`
        )
    })

    /** Mappings whose sync is enabled (what the sync pipeline sends). */
    const listEnabled: Effect.Effect<ReadonlyArray<MeterMapping>, SqlError, CurrentTenant> = orDieOnRow(listRows({ enabledOnly: true })).pipe(
      Effect.map((rows) => rows.map(toMapping))
    )

    const list: Effect.Effect<ReadonlyArray<MeterMappingRow>, SqlError, CurrentTenant> = orDieOnRow(listRows({ enabledOnly: false }))

    const findRow = SqlSchema.findOne({
      Request: Schema.Union(Schema.Struct({ meterId: Schema.String }), Schema.Struct({ providerMeterId: Schema.String })),
      Result: MeterMappingRowSchema,
      execute: (by) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM meter_provider_mappings
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
              AND ${"meterId" in by ? sql`meter_id = ${by.meterId}` : sql`provider_meter_id = ${by.providerMeterId}`}`
        )
    })

    const get = (meterId: string): Effect.Effect<Option.Option<MeterMappingRow>, SqlError, CurrentTenant> => orDieOnRow(findRow({ meterId }))

    const findByProviderMeterId = (providerMeterId: string): Effect.Effect<Option.Option<MeterMappingRow>, SqlError, CurrentTenant> =>
      orDieOnRow(findRow({ providerMeterId }))

    const decodeRow = Schema.decodeUnknown(MeterMappingRowSchema)

    /**
     * Insert or replace the mapping of `meterId`. `None` when the Stripe meter is already mapped
     * to another FlexPrice meter (unique violation on provider_meter_id).
     */
    const upsert = (m: MeterMapping) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO meter_provider_mappings ${sql.insert({
          id: newId.meterMapping(),
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          meterId: m.meterId,
          providerType: "stripe",
          providerMeterId: m.providerMeterId,
          stripeEventName: m.stripeEventName,
          customerPayloadKey: m.customerPayloadKey,
          valuePayloadKey: m.valuePayloadKey,
          formula: m.formula,
          wholeUnits: m.wholeUnits,
          syncEnabled: m.syncEnabled
        })}
        ON CONFLICT (tenant_id, environment_id, provider_type, meter_id) DO UPDATE SET
          provider_meter_id = EXCLUDED.provider_meter_id,
          stripe_event_name = EXCLUDED.stripe_event_name,
          customer_payload_key = EXCLUDED.customer_payload_key,
          value_payload_key = EXCLUDED.value_payload_key,
          formula = EXCLUDED.formula,
          whole_units = EXCLUDED.whole_units,
          sync_enabled = EXCLUDED.sync_enabled,
          updated_at = now()
        RETURNING ${cols}`
      ).pipe(
        Effect.flatMap((rows) => Effect.orDie(decodeRow(rows[0]))),
        Effect.map(Option.some),
        Effect.catchIf(
          (e) => (e.cause as { code?: string } | undefined)?.code === "23505",
          () => Effect.succeed(Option.none<MeterMappingRow>())
        )
      )

    const remove = (meterId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`DELETE FROM meter_provider_mappings
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe' AND meter_id = ${meterId}
          RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    return { listEnabled, list, get, findByProviderMeterId, upsert, remove } as const
  })
}) {}

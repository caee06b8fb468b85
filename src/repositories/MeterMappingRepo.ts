/**
 * FlexPrice meter → Stripe billing meter (`meter_provider_mappings`), per tenant environment.
 * The Stripe meter's event name, payload keys and formula are copied at mapping time so the sync
 * pipeline needs no Stripe call to know how to send.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Option } from "effect"
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

interface Row extends Omit<MeterMappingRow, "formula"> {
  readonly formula: string
}

const toRow = (r: Row): MeterMappingRow => ({ ...r, formula: r.formula === "count" ? "count" : r.formula === "last" ? "last" : "sum" })

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

    /** Mappings whose sync is enabled (what the sync pipeline sends). */
    const listEnabled = Effect.flatMap(CurrentTenant, (t) =>
      sql<Row>`SELECT ${cols} FROM meter_provider_mappings
        WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe' AND sync_enabled = true
        ORDER BY meter_id`
    ).pipe(Effect.map((rows) => rows.map((r) => toMapping(toRow(r)))))

    const list = Effect.flatMap(CurrentTenant, (t) =>
      sql<Row>`SELECT ${cols} FROM meter_provider_mappings
        WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
        ORDER BY meter_id`
    ).pipe(Effect.map((rows) => rows.map(toRow)))

    const get = (meterId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<Row>`SELECT ${cols} FROM meter_provider_mappings
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe' AND meter_id = ${meterId}`
      ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toRow)))

    const findByProviderMeterId = (providerMeterId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<Row>`SELECT ${cols} FROM meter_provider_mappings
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
            AND provider_meter_id = ${providerMeterId}`
      ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toRow)))

    /**
     * Insert or replace the mapping of `meterId`. `None` when the Stripe meter is already mapped
     * to another FlexPrice meter (unique violation on provider_meter_id).
     */
    const upsert = (m: MeterMapping) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<Row>`INSERT INTO meter_provider_mappings ${sql.insert({
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
        Effect.map((rows) => Option.some(toRow(rows[0]!))),
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

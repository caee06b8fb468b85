/**
 * Setup for bench/replicas.ts: a fresh PostgreSQL database with `tenants` tenants, each with a
 * Stripe config (sync disabled until the replicas are up), two meters mapped to emulator meters,
 * `customers` customers with mappings, and `events` processed events per (customer, meter) in
 * one closed hour — generated server-side from a formula the bench's BigInt oracle repeats.
 *
 * Tenants, configs and meters go through the product's repositories (an in-process runtime that
 * also runs the migrations); customers, mappings and events through bulk SQL as the database
 * owner (row-level security does not apply to it), one statement per chunk of customers.
 */
import { ConfigProvider, Effect, Layer, Logger, LogLevel, ManagedRuntime } from "effect"
import { createRequire } from "node:module"
import { AppLive } from "../src/App.js"
import { newId, type TenantScope } from "../src/domain/Ids.js"
import { CurrentTenant } from "../src/domain/Tenant.js"
import { MeterMappingRepo } from "../src/repositories/MeterMappingRepo.js"
import { MeterRepo } from "../src/repositories/MeterRepo.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"
import { storeStripeConfig } from "../test/support/stripe-config.js"
import * as O from "../test/support/oracle.js"
import type { EmulatorTarget } from "./emulatorTarget.js"

export const HOUR = 3_600_000

/** The bench's own SQL goes through node-postgres directly (untyped package: the little it uses). */
export interface BenchPool {
  readonly query: (text: string, values?: ReadonlyArray<unknown>) => Promise<{ rows: Array<Record<string, unknown>> }>
  readonly end: () => Promise<void>
}
export const pg = createRequire(import.meta.url)("pg") as {
  Pool: new (options: { connectionString: string; max: number }) => BenchPool
}

export interface Shape {
  readonly tenants: number
  readonly customers: number
  readonly events: number
}

export interface Setup {
  /** `${stripe customer}\u0000${stripe event name}` → expected sum (canonical text) */
  readonly expected: Map<string, string>
  /** tenant id → its label (`t${n}`) */
  readonly tenantLabel: Map<string, string>
  readonly aggregates: number
  readonly windowStart: Date
}

/**
 * The quantity of event k of customer i of tenant t, in thousandths (never 0, so no aggregate is
 * skipped as zero): the SQL below and the oracle compute the same formula independently.
 */
const QTY_SQL = `((r.t::bigint * 7919 + r.i::bigint * 104729 + k::bigint * 1299709) % 1000003 + 1)`
const qtyThousandths = (t: number, i: number, k: number) =>
  (BigInt(t) * 7919n + BigInt(i) * 104729n + BigInt(k) * 1299709n) % 1000003n + 1n

export const setupDatabase = async (options: {
  readonly databaseUrl: string
  readonly env: Record<string, string>
  readonly emulator: EmulatorTarget
  readonly apiKey: string
  readonly shape: Shape
  readonly log: (line: string) => void
}): Promise<Setup> => {
  const { shape, emulator } = options
  const provider = ConfigProvider.fromMap(
    new Map(Object.entries({ ...options.env, FLEXPRICE_DATABASE_URL: options.databaseUrl, FLEXPRICE_HTTP_ADDR: "127.0.0.1:0", FLEXPRICE_SCHEDULE_ENABLED: "false" }))
  )
  const runtime = ManagedRuntime.make(
    AppLive.pipe(Layer.provide(Layer.setConfigProvider(provider)), Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)))
  )
  const run = <A, E, R>(e: Effect.Effect<A, E, R>) => runtime.runPromise(e as Effect.Effect<A, E, never>)
  const windowStart = new Date(Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR)
  const expected = new Map<string, string>()
  const tenantLabel = new Map<string, string>()
  const tenants: Array<{ scope: TenantScope; meters: Array<{ id: string; type: "COUNT" | "SUM"; stripeEvent: string }> }> = []
  try {
    for (let t = 0; t < shape.tenants; t++) {
      const created = await run(Effect.flatMap(TenantRepo, (r) => r.create(`replicas-t${t}`, "bench")))
      const scope = { tenantId: created.tenantId, environmentId: created.environmentId } as TenantScope
      tenantLabel.set(scope.tenantId, `t${t}`)
      const asTenant = <A, E, R>(e: Effect.Effect<A, E, R>) => run(e.pipe(Effect.provideService(CurrentTenant, scope)))
      await asTenant(storeStripeConfig({ apiKey: options.apiKey, accountId: emulator.accountId, syncEnabled: false, graceMinutes: 0 }))
      const meters: Array<{ id: string; type: "COUNT" | "SUM"; stripeEvent: string }> = []
      for (const [name, type] of [["calls", "COUNT"], ["tokens", "SUM"]] as const) {
        const m = await asTenant(Effect.flatMap(MeterRepo, (r) => r.create({ name, event_name: name, aggregation: { type, field: type === "SUM" ? "tokens" : null } })))
        const stripeEvent = `t${t}_${name}`
        const sm = await emulator.createMeter({ display_name: stripeEvent, event_name: stripeEvent })
        await asTenant(
          Effect.flatMap(MeterMappingRepo, (r) =>
            r.upsert({
              meterId: m.id,
              providerMeterId: sm.id,
              stripeEventName: stripeEvent,
              customerPayloadKey: "stripe_customer_id",
              valuePayloadKey: "value",
              formula: "sum",
              wholeUnits: false,
              syncEnabled: true
            })
          )
        )
        meters.push({ id: m.id, type, stripeEvent })
      }
      tenants.push({ scope, meters })
    }
  } finally {
    await runtime.dispose()
  }
  options.log(`setup: ${shape.tenants} tenants with configs and meters`)

  const stripeIds = await emulator.createCustomers(shape.tenants * shape.customers)
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 1 })
  try {
    const ingestedAt = new Date(Date.now() - 60_000)
    for (const [t, tenant] of tenants.entries()) {
      const rows = Array.from({ length: shape.customers }, (_, i) => ({
        t,
        i,
        id: newId.customer(),
        mapping: newId.mapping(),
        stripe: stripeIds[t * shape.customers + i]!
      }))
      const json = JSON.stringify(rows)
      const [calls, tokens] = tenant.meters as [(typeof tenant.meters)[0], (typeof tenant.meters)[0]]
      await pool.query(
        `WITH r AS (SELECT * FROM jsonb_to_recordset($3::jsonb) AS r(t int, i int, id text, mapping text, stripe text)),
          c AS (INSERT INTO customers (id, tenant_id, environment_id, external_id)
            SELECT r.id, $1, $2, 'c' || r.i FROM r RETURNING 1),
          m AS (INSERT INTO customer_integration_mappings (id, tenant_id, environment_id, customer_id, provider_customer_id)
            SELECT r.mapping, $1, $2, r.id, r.stripe FROM r RETURNING 1)
        INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, "timestamp", ingested_at, qty_total, qty_billable)
        SELECT $1, $2, 'e' || r.i || '-' || k || '-' || mt.name, mt.id, r.id, mt.name,
          $4::timestamptz + ((r.i * 97 + k * 1009) % 3600) * interval '1 second', $5::timestamptz,
          q.qty, q.qty
        FROM r CROSS JOIN generate_series(1, $6::int) AS k
          CROSS JOIN (VALUES ($7, 'calls'), ($8, 'tokens')) AS mt(id, name)
          CROSS JOIN LATERAL (SELECT CASE mt.name WHEN 'calls' THEN 1::numeric ELSE ${QTY_SQL}::numeric / 1000 END AS qty) AS q`,
        [tenant.scope.tenantId, tenant.scope.environmentId, json, windowStart, ingestedAt, shape.events, calls.id, tokens.id]
      )
      for (const r of rows) {
        expected.set(`${r.stripe}\u0000${calls.stripeEvent}`, String(shape.events))
        let sum = 0n
        for (let k = 1; k <= shape.events; k++) sum += qtyThousandths(t, r.i, k)
        expected.set(`${r.stripe}\u0000${tokens.stripeEvent}`, O.format(O.plain(sum, 3)))
      }
    }
    await pool.query("ANALYZE")
  } finally {
    await pool.end()
  }
  options.log(`setup: ${shape.tenants * shape.customers} customers, ${shape.tenants * shape.customers * 2 * shape.events} processed events`)
  return { expected, tenantLabel, aggregates: shape.tenants * shape.customers * 2, windowStart }
}

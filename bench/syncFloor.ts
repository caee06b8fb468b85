/**
 * The floor of the sync bench (issue #16 item 3): what the same work costs without the product.
 * Measured in the same process and run as the product, against the same emulator and database:
 *
 * - the same stream requests (`requests` × 100 events, `concurrency` in flight, one session) from
 *   a bare `stripe` SDK client — no ledger, no retries, no breaker, no tracing;
 * - one bulk insert of `rows` ledger rows (the columns the window pass writes) in one statement.
 *
 * The floor's events go to their own Stripe event names, and its ledger rows to their own tenant,
 * so the product's totals check and queue are untouched.
 */
import type { AppServices } from "../src/LocalService.js"
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import Stripe from "stripe"
import { textArray } from "../src/db/SqlArrays.js"
import type { TenantScope } from "../src/domain/Ids.js"
import { CurrentTenant } from "../src/domain/Tenant.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"

export interface FloorInput {
  readonly emulatorUrl: string
  readonly apiKey: string
  /** Stripe customer ids to spread the events over */
  readonly stripeCustomers: ReadonlyArray<string>
  readonly requests: number
  readonly concurrency: number
  readonly rows: number
  readonly windowStart: Date
  readonly run: <A, E>(e: Effect.Effect<A, E, AppServices>) => Promise<A>
}

export interface Floor {
  readonly streamMs: number
  readonly insertMs: number
  readonly totalMs: number
}

const pool = async (total: number, width: number, task: (i: number) => Promise<unknown>) => {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < total) await task(next++)
    })
  )
}

const streamFloor = async (input: FloorInput, tag: string) => {
  const u = new URL(input.emulatorUrl)
  const stripe = new Stripe(input.apiKey, { host: u.hostname, port: Number(u.port), protocol: "http", maxNetworkRetries: 0, telemetry: false })
  const ts = input.windowStart.toISOString()
  const n = input.stripeCustomers.length
  const started = performance.now()
  const session = await stripe.v2.billing.meterEventSession.create()
  await pool(input.requests, input.concurrency, async (r) => {
    const events = Array.from({ length: 100 }, (_, i) => {
      const k = r * 100 + i
      return {
        event_name: `floor_${tag}_${k % 2}`,
        identifier: `floor-${tag}-${k}`,
        timestamp: ts,
        payload: { stripe_customer_id: input.stripeCustomers[Math.floor(k / 2) % n]!, value: String(1 + (k % 997)) }
      }
    })
    await stripe.v2.billing.meterEventStream.create({ events }, { apiKey: session.authentication_token })
  })
  return performance.now() - started
}

const insertFloor = async (input: FloorInput, tag: string) => {
  const t = await input.run(Effect.flatMap(TenantRepo, (r) => r.create(`floor-${tag}`, "bench")))
  const scope = { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope
  const windowEnd = new Date(input.windowStart.getTime() + 3_600_000)
  const ids = Array.from({ length: input.rows }, () => `sb_${randomBytes(15).toString("base64url")}`)
  const idx = Array.from({ length: input.rows }, (_, i) => i)
  const col = (f: (i: number) => string | null) => textArray(idx.map(f))
  const started = performance.now()
  await input.run(
    Effect.flatMap(PgClient.PgClient, (sql) =>
      sql`INSERT INTO stripe_sync_batches (id, tenant_id, environment_id, customer_id, meter_id, event_type,
          window_start, window_end, sequence, aggregated_quantity, sent_quantity, event_count, identifier,
          provider_meter_id, sync_status, skip_reason, ingested_after, watermark)
        SELECT r.id, ${scope.tenantId}, ${scope.environmentId}, r.customer_id, r.meter_id, r.event_type,
          ${input.windowStart}, ${windowEnd}, 1, r.aggregated_quantity, r.sent_quantity,
          r.event_count, r.identifier, r.provider_meter_id, 'pending', NULL, NULL, ${windowEnd}
        FROM unnest(${textArray(ids)}::text[], ${col((i) => `cus_floor_${Math.floor(i / 2)}`)}::text[],
            ${col((i) => `mtr_floor_${i % 2}`)}::text[], ${col((i) => `floor_${i % 2}`)}::text[],
            ${col((i) => String(1 + (i % 997)))}::numeric[], ${col((i) => String(1 + (i % 997)))}::numeric[],
            ${col(() => "1")}::bigint[], ${col((i) => `floor-${tag}-${i}`)}::text[], ${col((i) => `mtr_stripe_${i % 2}`)}::text[])
          AS r(id, customer_id, meter_id, event_type, aggregated_quantity, sent_quantity, event_count, identifier, provider_meter_id)`.pipe(
        Effect.provideService(CurrentTenant, scope)
      )
    )
  )
  return performance.now() - started
}

/** One floor measurement; `tag` keeps repeated measurements apart (event names, identifiers, tenant). */
export const measureFloor = async (input: FloorInput, tag: string): Promise<Floor> => {
  const streamMs = await streamFloor(input, tag)
  const insertMs = await insertFloor(input, tag)
  return { streamMs, insertMs, totalMs: streamMs + insertMs }
}

/**
 * Stripe webhook deliveries (`webhook_events`), unique per (tenant, env, Stripe event id).
 *
 * `claim` is the dedup: the first delivery inserts a `received` row and processes it. A later
 * delivery of the same event only gets to process it again if the earlier attempt `failed`, or
 * if it stayed `received` for longer than STALE_SECONDS (the process died mid-way) — so a failed
 * first attempt is never swallowed as a "duplicate", and a concurrent duplicate is.
 */
import { SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import { newId } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { asSystem } from "../db/RowSecurity.js"

export const WebhookStatus = Schema.Literal("received", "processed", "duplicate", "unmapped", "conflict", "failed", "ignored")
export type WebhookStatus = typeof WebhookStatus.Type
export const WEBHOOK_STATUSES: ReadonlyArray<WebhookStatus> = WebhookStatus.literals

/** A `received` row older than this is taken to belong to an attempt that died. */
export const STALE_SECONDS = 120

export interface WebhookEventRow {
  readonly id: string
  readonly stripeEventId: string
  readonly type: string
  readonly stripeCreated: Date | null
  readonly stripeObjectId: string | null
  readonly receivedAt: Date
  readonly processedAt: Date | null
  readonly status: WebhookStatus
  readonly error: string | null
  readonly details: unknown
}

/** A delivery as read; `details` is stored jsonb, read as text (see `cols`) and parsed here. */
const WebhookEventRowSchema = Schema.Struct({
  id: Schema.String,
  stripeEventId: Schema.String,
  type: Schema.String,
  stripeCreated: Schema.NullOr(DbDate),
  stripeObjectId: Schema.NullOr(Schema.String),
  receivedAt: DbDate,
  processedAt: Schema.NullOr(DbDate),
  status: WebhookStatus,
  error: Schema.NullOr(Schema.String),
  details: Schema.NullOr(Schema.parseJson())
})

export interface ClaimInput {
  readonly stripeEventId: string
  readonly type: string
  readonly stripeCreated: Date | null
  readonly stripeObjectId: string | null
}

export class WebhookEventRepo extends Effect.Service<WebhookEventRepo>()("flexprice/WebhookEventRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    // details as text: the client's camelCase transform would otherwise rewrite the JSON's keys.
    const cols = sql`id, stripe_event_id, type, stripe_created, stripe_object_id, received_at, processed_at, status, error, details::text AS details`

    /** The row id to process, or null when this delivery is a duplicate. */
    const claim = (input: ClaimInput) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ id: string }>`INSERT INTO webhook_events ${sql.insert({
          id: newId.webhookEvent(),
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          stripeEventId: input.stripeEventId,
          type: input.type,
          stripeCreated: input.stripeCreated,
          stripeObjectId: input.stripeObjectId,
          status: "received"
        })}
        ON CONFLICT (tenant_id, environment_id, stripe_event_id) DO UPDATE SET
          status = 'received', error = NULL, processed_at = NULL, received_at = now()
        WHERE webhook_events.status = 'failed'
           OR (webhook_events.status = 'received' AND webhook_events.received_at < now() - make_interval(secs => ${STALE_SECONDS}))
        RETURNING id`
      ).pipe(Effect.map((rows) => rows[0]?.id ?? null))

    const finish = (id: string, status: Exclude<WebhookStatus, "received" | "failed">, details: Record<string, unknown>) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE webhook_events SET status = ${status}, details = ${JSON.stringify(details)}::jsonb, error = NULL, processed_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}`
      ).pipe(Effect.asVoid)

    const markFailed = (id: string, error: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE webhook_events SET status = 'failed', error = ${error.slice(0, 2000)}, processed_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}`
      ).pipe(Effect.asVoid)

    /** True when a customer.deleted for this Stripe customer was already processed (out-of-order guard). */
    const customerDeleted = (stripeCustomerId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ one: number }>`SELECT 1 AS one FROM webhook_events
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            AND type = 'customer.deleted' AND stripe_object_id = ${stripeCustomerId} AND status = 'processed'
          LIMIT 1`
      ).pipe(Effect.map((rows) => rows.length > 0))

    const findRow = SqlSchema.findOne({
      Request: Schema.String,
      Result: WebhookEventRowSchema,
      execute: (stripeEventId) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM webhook_events
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND stripe_event_id = ${stripeEventId}`
        )
    })
    const findByStripeEventId = (stripeEventId: string): Effect.Effect<WebhookEventRow | undefined, SqlError, CurrentTenant> =>
      orDieOnRow(findRow(stripeEventId)).pipe(Effect.map(Option.getOrUndefined))

    const ListRequest = Schema.Struct({
      status: Schema.optional(WebhookStatus),
      limit: Schema.Int,
      before: Schema.optional(Schema.DateFromSelf)
    })
    const listRows = SqlSchema.findAll({
      Request: ListRequest,
      Result: WebhookEventRowSchema,
      execute: (opts) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM webhook_events
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              ${opts.status ? sql`AND status = ${opts.status}` : sql``}
              ${opts.before ? sql`AND received_at < ${opts.before}` : sql``}
            ORDER BY received_at DESC, id DESC LIMIT ${opts.limit}`
        )
    })
    /** Newest first. */
    const list = (opts: {
      readonly status?: WebhookStatus | undefined
      readonly limit: number
      readonly before?: Date | undefined
    }): Effect.Effect<ReadonlyArray<WebhookEventRow>, SqlError, CurrentTenant> =>
      orDieOnRow(listRows({ limit: opts.limit, ...(opts.status ? { status: opts.status } : {}), ...(opts.before ? { before: opts.before } : {}) }))

    /** Retention: removes rows received before `cutoff` (all tenants). */
    const pruneBefore = (cutoff: Date) =>
      sql`DELETE FROM webhook_events WHERE received_at < ${cutoff} RETURNING id`.pipe(
        Effect.map((rows) => rows.length),
        asSystem("retention prunes every tenant")
      )

    return { claim, finish, markFailed, customerDeleted, findByStripeEventId, list, pruneBefore } as const
  })
}) {}

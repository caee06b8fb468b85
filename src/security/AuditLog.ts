/**
 * Who or what read or changed a secret or a Stripe config, when and from where. Rows never carry
 * a secret: callers pass operation names, field names and key versions only, and `details` is
 * scrubbed of anything that looks like a Stripe secret before it is written, as a last guard.
 */
import { SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, orDieOnRow } from "../db/Rows.js"
import { newId, type TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { asSystem, inTenant } from "../db/RowSecurity.js"
import { scrubSecrets } from "../stripe/StripeErrors.js"

export type AuditAction =
  | "secret.decrypt"
  | "secret.encrypt"
  | "config.create"
  | "config.update"
  | "config.test"
  | "meter_mapping.upsert"
  | "meter_mapping.delete"
  | "keys.rotate"
  | (string & {})

export interface AuditEntry {
  readonly action: AuditAction
  /** `api_key:<hint>` style label of the subject, e.g. `stripe_config`, `meter_mapping:mtr_…`. */
  readonly target?: string | undefined
  /** `api` (an API key id when known), `sync`, `webhook`, `cli`, `migration`, ... */
  readonly actor: string
  readonly sourceIp?: string | undefined
  readonly details?: Record<string, unknown> | undefined
  /** Overrides CurrentTenant (e.g. rotation across all tenants). `null` = no tenant. */
  readonly scope?: Pick<TenantScope, "tenantId" | "environmentId"> | null | undefined
}

export interface AuditRow {
  readonly id: string
  readonly tenantId: string | null
  readonly environmentId: string | null
  readonly actor: string
  readonly action: string
  readonly target: string | null
  readonly sourceIp: string | null
  /** JSON text as stored. */
  readonly details: string
  readonly createdAt: Date
}

const AuditRowSchema = Schema.Struct({
  id: Schema.String,
  tenantId: Schema.NullOr(Schema.String),
  environmentId: Schema.NullOr(Schema.String),
  actor: Schema.String,
  action: Schema.String,
  target: Schema.NullOr(Schema.String),
  sourceIp: Schema.NullOr(Schema.String),
  details: Schema.String,
  createdAt: DbDate
})
/** A row of `query`, with its keyset position (microseconds since the epoch, as text: exact). */
const AuditPageRow = Schema.Struct({ ...AuditRowSchema.fields, position: Schema.String })

export interface AuditQuery {
  readonly action?: string | undefined
  readonly from?: Date | undefined
  readonly to?: Date | undefined
  readonly limit: number
  /** keyset of the previous page's last row: created_at in microseconds since the epoch (a JS Date keeps ms only) and id */
  readonly before?: { readonly position: string; readonly id: string } | undefined
}

const scrubDetails = (details: Record<string, unknown>): string => scrubSecrets(JSON.stringify(details))

export class AuditLog extends Effect.Service<AuditLog>()("flexprice/AuditLog", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient

    /** Appends one row. The tenant comes from `entry.scope`, else CurrentTenant if present. */
    const record = Effect.fn("AuditLog.record")(function* (entry: AuditEntry) {
      yield* Effect.annotateCurrentSpan({ "audit.action": entry.action })
      const ctx = yield* Effect.serviceOption(CurrentTenant)
      const scope = entry.scope === null ? undefined : entry.scope ?? Option.getOrUndefined(ctx)
      const insert = sql`INSERT INTO audit_log ${sql.insert({
        id: newId.audit(),
        tenantId: scope?.tenantId ?? null,
        environmentId: scope?.environmentId ?? null,
        actor: entry.actor,
        action: entry.action,
        target: entry.target ?? null,
        sourceIp: entry.sourceIp ?? null,
        details: scrubDetails(entry.details ?? {})
      })}`
      yield* scope === undefined ? insert.pipe(asSystem("an audit entry of no tenant")) : insert.pipe(inTenant(scope))
    })

    const tenantRows = SqlSchema.findAll({
      Request: Schema.Int,
      Result: AuditRowSchema,
      execute: (limit) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT id, tenant_id, environment_id, actor, action, target, source_ip, details::text AS details, created_at
            FROM audit_log WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            ORDER BY created_at DESC, id DESC LIMIT ${limit}`
        )
    })
    /** Most recent first; for tests and the admin. */
    const listForTenant = (limit = 100): Effect.Effect<ReadonlyArray<AuditRow>, SqlError, CurrentTenant> => orDieOnRow(tenantRows(limit))

    /**
     * The current tenant's rows, newest first, for GET /v1/audit-log: optional action and
     * [from, to) on created_at; `before` is the keyset (created_at, id) of the previous page's last row.
     */
    const pageRows = SqlSchema.findAll({
      Request: Schema.Struct({
        action: Schema.optional(Schema.String),
        from: Schema.optional(Schema.DateFromSelf),
        to: Schema.optional(Schema.DateFromSelf),
        limit: Schema.Int,
        before: Schema.optional(Schema.Struct({ position: Schema.String, id: Schema.String }))
      }),
      Result: AuditPageRow,
      execute: (f) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT id, tenant_id, environment_id, actor, action, target, source_ip,
              details::text AS details, created_at,
              ((EXTRACT(EPOCH FROM created_at) * 1000000)::bigint)::text AS position
            FROM audit_log WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              ${f.action ? sql`AND action = ${f.action}` : sql``}
              ${f.from ? sql`AND created_at >= ${f.from}` : sql``}
              ${f.to ? sql`AND created_at < ${f.to}` : sql``}
              ${f.before
                ? sql`AND (created_at, id) < (timestamptz 'epoch' + ${f.before.position}::bigint * interval '1 microsecond', ${f.before.id})`
                : sql``}
            ORDER BY created_at DESC, id DESC LIMIT ${f.limit}`
        )
    })
    const query = (f: AuditQuery): Effect.Effect<ReadonlyArray<AuditRow & { readonly position: string }>, SqlError, CurrentTenant> =>
      orDieOnRow(
        pageRows({
          limit: f.limit,
          ...(f.action ? { action: f.action } : {}),
          ...(f.from ? { from: f.from } : {}),
          ...(f.to ? { to: f.to } : {}),
          ...(f.before ? { before: f.before } : {})
        })
      )

    const allRows = SqlSchema.findAll({
      Request: Schema.Int,
      Result: AuditRowSchema,
      execute: (limit) =>
        sql`SELECT id, tenant_id, environment_id, actor, action, target, source_ip, details::text AS details, created_at
          FROM audit_log ORDER BY created_at DESC, id DESC LIMIT ${limit}`
    })
    const listAll = (limit = 1000): Effect.Effect<ReadonlyArray<AuditRow>, SqlError> => orDieOnRow(allRows(limit)).pipe(asSystem("the audit log across tenants"))

    return { record, listForTenant, query, listAll } as const
  })
}) {}

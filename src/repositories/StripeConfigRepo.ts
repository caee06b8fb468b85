/**
 * Per tenant environment Stripe configuration (`stripe_tenant_configs`). Secrets are stored only
 * as ciphertexts of the Encryption service; this repository never sees a plaintext.
 */
import { SqlSchema } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Schema } from "effect"
import { DbDate, DbInt, orDieOnRow } from "../db/Rows.js"
import { EnvironmentId, TenantId, TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { asSystem, inTenant } from "../db/RowSecurity.js"

export const AGGREGATION_WINDOWS = [15, 30, 60, 120, 360, 720, 1440] as const
export type AggregationWindowMinutes = (typeof AGGREGATION_WINDOWS)[number]

/** What the sync pipeline and the other Stripe features read. No secrets. */
export interface TenantStripeConfig {
  readonly scope: TenantScope
  readonly syncEnabled: boolean
  readonly aggregationWindowMinutes: number // 15|30|60|120|360|720|1440
  readonly gracePeriodMinutes: number
  readonly transport: "stream" | "v1"
  readonly livemode: boolean
  readonly stripeAccountId: string | null
  /**
   * Set when Stripe refused the key (401/403): the push waits, charging no attempt to any batch,
   * until the configuration changes (`upsert`) or a connection test succeeds (`setAccount`).
   * Optional so records built by hand (tests, tools) need not name it.
   */
  readonly syncPaused?: SyncPause | null | undefined
  /** When the row was last written; a pause is recorded only against the row a run read. */
  readonly updatedAt?: Date | undefined
}

export interface SyncPause {
  readonly code: string
  readonly message: string
  readonly since: Date
}

/** The full row, ciphertexts included (config API, StripeAccounts, webhooks, rotation). */
export interface StoredStripeConfig extends TenantStripeConfig {
  readonly apiKeyEncrypted: string
  readonly apiKeyHint: string
  readonly webhookSecretEncrypted: string | null
  /** Signing secret of the v2 event destination (thin events), set by PUT /v1/stripe/config. */
  readonly eventDestinationSecretEncrypted: string | null
  readonly keyVersion: string
  readonly createdAt: Date
  readonly updatedAt: Date
}

/** Everything written by PUT /v1/stripe/config (after merging with the stored row). */
export interface StripeConfigWrite {
  readonly apiKeyEncrypted: string
  readonly apiKeyHint: string
  readonly webhookSecretEncrypted: string | null
  readonly keyVersion: string
  readonly syncEnabled: boolean
  readonly aggregationWindowMinutes: number
  readonly gracePeriodMinutes: number
  readonly transport: "stream" | "v1"
  readonly livemode: boolean
  readonly stripeAccountId: string | null
}

/**
 * A stored row as read. The ciphertexts are plain text columns (never a plaintext secret here);
 * transport is a literal (the table's CHECK), the scope's ids checked as TenantScope checks them.
 */
const RowSchema = Schema.Struct({
  tenantId: TenantId,
  environmentId: EnvironmentId,
  apiKeyEncrypted: Schema.String,
  apiKeyHint: Schema.String,
  webhookSecretEncrypted: Schema.NullOr(Schema.String),
  eventDestinationSecretEncrypted: Schema.NullOr(Schema.String),
  keyVersion: Schema.String,
  syncEnabled: Schema.Boolean,
  aggregationWindowMinutes: DbInt,
  gracePeriodMinutes: DbInt,
  transport: Schema.Literal("stream", "v1"),
  stripeAccountId: Schema.NullOr(Schema.String),
  livemode: Schema.Boolean,
  syncPausedAt: Schema.NullOr(DbDate),
  syncPausedCode: Schema.NullOr(Schema.String),
  syncPausedMessage: Schema.NullOr(Schema.String),
  createdAt: DbDate,
  updatedAt: DbDate
})
type Row = typeof RowSchema.Type
const decodeRows = Schema.decodeUnknown(Schema.Array(RowSchema))

const toStored = (r: Row): StoredStripeConfig => ({
  scope: new TenantScope({ tenantId: r.tenantId, environmentId: r.environmentId }),
  syncEnabled: r.syncEnabled,
  aggregationWindowMinutes: r.aggregationWindowMinutes,
  gracePeriodMinutes: r.gracePeriodMinutes,
  transport: r.transport,
  livemode: r.livemode,
  stripeAccountId: r.stripeAccountId,
  apiKeyEncrypted: r.apiKeyEncrypted,
  apiKeyHint: r.apiKeyHint,
  webhookSecretEncrypted: r.webhookSecretEncrypted,
  eventDestinationSecretEncrypted: r.eventDestinationSecretEncrypted,
  keyVersion: r.keyVersion,
  syncPaused:
    r.syncPausedAt === null
      ? null
      : { code: r.syncPausedCode ?? "stripe_authentication_failed", message: r.syncPausedMessage ?? "", since: r.syncPausedAt },
  createdAt: r.createdAt,
  updatedAt: r.updatedAt
})

/** Drops the ciphertexts: what `get` / `listSyncEnabled` hand out. */
export const publicConfig = (s: StoredStripeConfig): TenantStripeConfig => ({
  scope: s.scope,
  syncEnabled: s.syncEnabled,
  aggregationWindowMinutes: s.aggregationWindowMinutes,
  gracePeriodMinutes: s.gracePeriodMinutes,
  transport: s.transport,
  livemode: s.livemode,
  stripeAccountId: s.stripeAccountId,
  syncPaused: s.syncPaused ?? null,
  updatedAt: s.updatedAt
})

/** Which secret column a ciphertext lives in (rotation). */
export type SecretColumn = "api_key" | "webhook_secret" | "event_destination_secret"

export class StripeConfigRepo extends Effect.Service<StripeConfigRepo>()("flexprice/StripeConfigRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`tenant_id, environment_id, api_key_encrypted, api_key_hint, webhook_secret_encrypted,
      event_destination_secret_encrypted, key_version,
      sync_enabled, aggregation_window_minutes, grace_period_minutes, transport, stripe_account_id, livemode,
      sync_paused_at, sync_paused_code, sync_paused_message, created_at, updated_at`

    /** The first row a write returned, decoded. */
    const firstRow = (rows: ReadonlyArray<unknown>): Effect.Effect<Option.Option<StoredStripeConfig>> =>
      Effect.map(Effect.orDie(decodeRows(rows)), (decoded) => Option.map(Option.fromNullable(decoded[0]), toStored))

    const findRow = SqlSchema.findOne({
      Request: Schema.Struct({ tenantId: Schema.String, environmentId: Schema.String }),
      Result: RowSchema,
      execute: (scope) =>
        sql`SELECT ${cols} FROM stripe_tenant_configs
          WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`
    })
    /** Stored row of an explicit scope (webhook routes, where the tenant comes from the URL). */
    const getStoredFor = (scope: Pick<TenantScope, "tenantId" | "environmentId">): Effect.Effect<Option.Option<StoredStripeConfig>, SqlError> =>
      orDieOnRow(findRow({ tenantId: scope.tenantId, environmentId: scope.environmentId })).pipe(
        Effect.map(Option.map(toStored)),
        inTenant(scope)
      )

    const getStored = Effect.flatMap(CurrentTenant, getStoredFor)

    /** The current tenant's config, without secrets. */
    const get = Effect.map(getStored, Option.map(publicConfig))

    const listRows = SqlSchema.findAll({
      Request: Schema.Struct({ syncEnabledOnly: Schema.Boolean }),
      Result: RowSchema,
      execute: ({ syncEnabledOnly }) =>
        sql`SELECT ${cols} FROM stripe_tenant_configs ${syncEnabledOnly ? sql`WHERE sync_enabled = true` : sql``}
          ORDER BY tenant_id, environment_id`
    })

    /** Every tenant environment with sync turned on. */
    const listSyncEnabled: Effect.Effect<ReadonlyArray<TenantStripeConfig>, SqlError> = orDieOnRow(listRows({ syncEnabledOnly: true })).pipe(
      Effect.map((rows) => rows.map((r) => publicConfig(toStored(r)))),
      asSystem("the scheduler enumerates tenants")
    )

    /** Insert or replace the current tenant's row. */
    const upsert = (w: StripeConfigWrite) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`INSERT INTO stripe_tenant_configs ${sql.insert({
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          apiKeyEncrypted: w.apiKeyEncrypted,
          apiKeyHint: w.apiKeyHint,
          webhookSecretEncrypted: w.webhookSecretEncrypted,
          keyVersion: w.keyVersion,
          syncEnabled: w.syncEnabled,
          aggregationWindowMinutes: w.aggregationWindowMinutes,
          gracePeriodMinutes: w.gracePeriodMinutes,
          transport: w.transport,
          livemode: w.livemode,
          stripeAccountId: w.stripeAccountId
        })}
        ON CONFLICT (tenant_id, environment_id) DO UPDATE SET
          api_key_encrypted = EXCLUDED.api_key_encrypted,
          api_key_hint = EXCLUDED.api_key_hint,
          webhook_secret_encrypted = EXCLUDED.webhook_secret_encrypted,
          key_version = EXCLUDED.key_version,
          sync_enabled = EXCLUDED.sync_enabled,
          aggregation_window_minutes = EXCLUDED.aggregation_window_minutes,
          grace_period_minutes = EXCLUDED.grace_period_minutes,
          transport = EXCLUDED.transport,
          livemode = EXCLUDED.livemode,
          stripe_account_id = EXCLUDED.stripe_account_id,
          sync_paused_at = NULL, sync_paused_code = NULL, sync_paused_message = NULL,
          updated_at = now()
        RETURNING ${cols}`.pipe(Effect.flatMap(firstRow), Effect.map(Option.getOrThrow))
      )

    /** Stores (or clears, null) the event destination's signing secret of the current tenant. */
    const setEventDestinationSecret = (cipher: string | null) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE stripe_tenant_configs SET event_destination_secret_encrypted = ${cipher}, updated_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
          RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstRow))

    /** Records the result of a connection test. */
    const setAccount = (accountId: string, livemode: boolean) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE stripe_tenant_configs SET stripe_account_id = ${accountId}, livemode = ${livemode},
            sync_paused_at = NULL, sync_paused_code = NULL, sync_paused_message = NULL, updated_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}`
      ).pipe(Effect.asVoid)

    /**
     * Pauses the current tenant's push after Stripe refused its key. Written only if the row is
     * still the one the run read (`readAt`: its updated_at), so a key saved meanwhile is never
     * paused for the old key's failure. True when the pause was recorded.
     */
    const pauseSync = (pause: SyncPause, readAt: Date | undefined) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ tenantId: string }>`UPDATE stripe_tenant_configs SET sync_paused_at = ${pause.since},
            sync_paused_code = ${pause.code}, sync_paused_message = ${pause.message}
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
            ${readAt === undefined ? sql`` : sql`AND updated_at < ${new Date(readAt.getTime() + 1)}`}
          RETURNING tenant_id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    /**
     * Disconnects the current tenant (DELETE /v1/stripe/config): the row and its ciphertexts go,
     * the ledger stays. Returns the removed row.
     */
    const remove = Effect.flatMap(CurrentTenant, (t) =>
      sql`DELETE FROM stripe_tenant_configs WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
        RETURNING ${cols}`
    ).pipe(Effect.flatMap(firstRow))

    const scopeRows = SqlSchema.findAll({
      Request: Schema.String,
      Result: TenantScope,
      execute: (accountId) =>
        sql`SELECT tenant_id, environment_id FROM stripe_tenant_configs
          WHERE stripe_account_id = ${accountId} ORDER BY tenant_id, environment_id`
    })
    /** Tenant environments connected to a Stripe account (global webhook endpoint). */
    const scopesByAccountId = (accountId: string): Effect.Effect<ReadonlyArray<TenantScope>, SqlError> =>
      orDieOnRow(scopeRows(accountId)).pipe(asSystem("routing a global webhook delivery to its tenant"))

    /** Every stored row, all tenants (key rotation). */
    const listAllStored: Effect.Effect<ReadonlyArray<StoredStripeConfig>, SqlError> = orDieOnRow(listRows({ syncEnabledOnly: false })).pipe(
      Effect.map((rows) => rows.map(toStored)),
      asSystem("key rotation enumerates tenants")
    )

    /**
     * Replaces one ciphertext only if it is still the one that was read (optimistic check), so a
     * concurrent PUT is never overwritten by rotation. True when the row was updated.
     */
    const swapCiphertext = (
      scope: Pick<TenantScope, "tenantId" | "environmentId">,
      column: SecretColumn,
      expected: string,
      replacement: string,
      keyVersion: string
    ) =>
      (column === "api_key"
        ? sql`UPDATE stripe_tenant_configs SET api_key_encrypted = ${replacement}, key_version = ${keyVersion}, updated_at = now()
            WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND api_key_encrypted = ${expected}
            RETURNING tenant_id`
        : column === "event_destination_secret"
        ? sql`UPDATE stripe_tenant_configs SET event_destination_secret_encrypted = ${replacement}, updated_at = now()
            WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
              AND event_destination_secret_encrypted = ${expected}
            RETURNING tenant_id`
        : sql`UPDATE stripe_tenant_configs SET webhook_secret_encrypted = ${replacement}, updated_at = now()
            WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND webhook_secret_encrypted = ${expected}
            RETURNING tenant_id`
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        inTenant(scope)
      )

    return {
      get,
      getStored,
      getStoredFor,
      listSyncEnabled,
      upsert,
      setEventDestinationSecret,
      setAccount,
      pauseSync,
      remove,
      scopesByAccountId,
      listAllStored,
      swapCiphertext
    } as const
  })
}) {}

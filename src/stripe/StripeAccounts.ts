/**
 * The decrypted Stripe credentials of a tenant environment, for the features that call Stripe
 * (sync, migration, config test, meter lookup) and verify webhooks.
 *
 * Every decryption writes an `audit_log` row naming the operation. Decrypted values are cached
 * in memory for a few minutes, so a sync run or a webhook burst costs one decryption (and one
 * audit row) rather than one per call.
 *
 * A key changed on another replica must be used here within seconds, not when the cache expires:
 * every use (`refFor`: once per sync run's push, per config test, per migration) re-reads the
 * stored row by primary key and compares its ciphertext and mode with the cached entry's, so the
 * cache saves the decryption and its audit row, never the freshness check. The webhook secret is
 * checked the same way. A failed decryption is counted in `flexprice_errors_total{code=
 * "decryption_failed"}` and reported (Sentry when configured), besides its audit row.
 */
import { SqlError } from "@effect/sql"
import { Clock, Effect, Metric, MetricLabel, Option, Redacted, Schema } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { StripeConfigRepo, type StoredStripeConfig } from "../repositories/StripeConfigRepo.js"
import { AuditLog } from "../security/AuditLog.js"
import { DecryptionFailed, Encryption } from "../security/Encryption.js"
import type { StripeAccountRef } from "./StripeClient.js"

/** The tenant environment has no Stripe configuration (PUT /v1/stripe/config first). */
export class StripeNotConfigured extends Schema.TaggedError<StripeNotConfigured>()("StripeNotConfigured", {
  code: Schema.Literal("stripe_not_configured"),
  message: Schema.String
}) {
  static of() {
    return (
    new StripeNotConfigured({
      code: "stripe_not_configured",
      message: "Stripe is not configured for this environment (PUT /v1/stripe/config)"
    }))
  }
}

export const CACHE_TTL_MS = 5 * 60 * 1000

export const tenantKeyOf = (scope: Pick<TenantScope, "tenantId" | "environmentId">) => `${scope.tenantId}/${scope.environmentId}`

interface Cached<A> {
  readonly value: A
  readonly cipher: string
  readonly expiresAt: number
}

export class StripeAccounts extends Effect.Service<StripeAccounts>()("flexprice/StripeAccounts", {
  effect: Effect.gen(function* () {
    const repo = yield* StripeConfigRepo
    const encryption = yield* Encryption
    const audit = yield* AuditLog
    const keys = new Map<string, Cached<StripeAccountRef>>()
    const secrets = new Map<string, Cached<Redacted.Redacted<string>>>()
    const reporter = yield* Effect.serviceOption(ErrorReporter)

    const decryptFailed = (
      scope: Pick<TenantScope, "tenantId" | "environmentId">,
      e: DecryptionFailed,
      secret: "api_key" | "webhook_secret" | "event_destination_secret",
      operation: string
    ) =>
      Effect.zipRight(
        Metric.increment(
          Metric.taggedWithLabels(Metrics.errorsTotal, [MetricLabel.make("code", e.code), MetricLabel.make("area", "config")])
        ),
        Option.match(reporter, {
          onNone: () => Effect.void,
          onSome: (r) =>
            r.report(e, {
              area: "config",
              code: e.code,
              tenantId: scope.tenantId,
              environmentId: scope.environmentId,
              extra: { secret, operation, reason: e.reason, key_version: e.keyVersion ?? "unknown" }
            })
        })
      )

    const decryptAudited = (
      scope: Pick<TenantScope, "tenantId" | "environmentId">,
      cipher: string,
      secret: "api_key" | "webhook_secret" | "event_destination_secret",
      operation: string
    ) =>
      encryption.decrypt(cipher).pipe(
        Effect.tapError((e) => decryptFailed(scope, e, secret, operation)),
        Effect.tapError((e) =>
          audit.record({
            action: "secret.decrypt_failed",
            actor: "system",
            target: secret,
            scope,
            details: { operation, reason: e.reason, key_version: e.keyVersion ?? "unknown" }
          })
        ),
        Effect.tap(() =>
          audit.record({
            action: "secret.decrypt",
            actor: "system",
            target: secret,
            scope,
            details: { operation, key_version: Option.getOrElse(encryption.versionOf(cipher), () => "unknown") }
          })
        )
      )

    const refOfStored = (stored: StoredStripeConfig, operation: string) =>
      Effect.gen(function* () {
        const k = tenantKeyOf(stored.scope)
        const now = yield* Clock.currentTimeMillis
        const hit = keys.get(k)
        if (hit !== undefined && hit.expiresAt > now && hit.cipher === stored.apiKeyEncrypted && hit.value.livemode === stored.livemode)
          return hit.value
        const apiKey = yield* decryptAudited(stored.scope, stored.apiKeyEncrypted, "api_key", operation)
        const ref: StripeAccountRef = { tenantKey: k, apiKey, livemode: stored.livemode }
        keys.set(k, { value: ref, cipher: stored.apiKeyEncrypted, expiresAt: now + CACHE_TTL_MS })
        return ref
      })

    /** Like `refFor`, naming the operation in the audit row when a decryption happens. */
    const refForOperation: (
      operation: string
    ) => Effect.Effect<StripeAccountRef, StripeNotConfigured | DecryptionFailed | SqlError.SqlError, CurrentTenant> = Effect.fn("StripeAccounts.refFor")(
      function* (operation: string) {
        yield* Effect.annotateCurrentSpan({ operation })
        // No cache shortcut before this read: the row may have changed on another replica.
        const stored = yield* repo.getStored
        if (Option.isNone(stored)) {
          keys.delete(tenantKeyOf(yield* CurrentTenant))
          return yield* StripeNotConfigured.of()
        }
        return yield* refOfStored(stored.value, operation)
      }
    )

    /** Decrypted key for the current tenant (audited; cached a few minutes). */
    const refFor: Effect.Effect<StripeAccountRef, StripeNotConfigured | DecryptionFailed | SqlError.SqlError, CurrentTenant> =
      refForOperation("stripe_api")

    /**
     * The webhook signing secret of a tenant environment (None when not configured or no secret
     * stored). The stored row is re-read each time so a new secret applies at once; only the
     * decryption is cached, keyed by ciphertext.
     */
    const signingSecretFor = (
      scope: Pick<TenantScope, "tenantId" | "environmentId">,
      which: "webhook_secret" | "event_destination_secret"
    ) =>
      Effect.gen(function* () {
        const stored = yield* repo.getStoredFor(scope)
        if (Option.isNone(stored)) return Option.none<Redacted.Redacted<string>>()
        const cipher = which === "webhook_secret" ? stored.value.webhookSecretEncrypted : stored.value.eventDestinationSecretEncrypted
        if (cipher === null) return Option.none<Redacted.Redacted<string>>()
        const k = `${tenantKeyOf(scope)}\u0000${which}`
        const now = yield* Clock.currentTimeMillis
        const hit = secrets.get(k)
        if (hit !== undefined && hit.expiresAt > now && hit.cipher === cipher) return Option.some(hit.value)
        const secret = yield* decryptAudited(scope, cipher, which, which === "webhook_secret" ? "webhook_verify" : "event_destination_verify")
        secrets.set(k, { value: secret, cipher, expiresAt: now + CACHE_TTL_MS })
        return Option.some(secret)
      })

    const webhookSecretFor = Effect.fn("StripeAccounts.webhookSecretFor")((scope: Pick<TenantScope, "tenantId" | "environmentId">) =>
      signingSecretFor(scope, "webhook_secret")
    )

    /** The signing secret of the tenant's v2 event destination (thin events); None when not set. */
    const eventDestinationSecretFor = Effect.fn("StripeAccounts.eventDestinationSecretFor")((scope: Pick<TenantScope, "tenantId" | "environmentId">) =>
      signingSecretFor(scope, "event_destination_secret")
    )

    /** Forget cached plaintexts of a tenant environment (after its config changed). */
    const invalidate = (scope: Pick<TenantScope, "tenantId" | "environmentId">) =>
      Effect.sync(() => {
        keys.delete(tenantKeyOf(scope))
        secrets.delete(`${tenantKeyOf(scope)}\u0000webhook_secret`)
        secrets.delete(`${tenantKeyOf(scope)}\u0000event_destination_secret`)
      })

    return { refFor, refForOperation, refOfStored, webhookSecretFor, eventDestinationSecretFor, invalidate } as const
  })
}) {}

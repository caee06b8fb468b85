/**
 * `flexprice keys rotate`: re-encrypts every stored secret under the newest master key while the
 * service keeps serving. Row by row, each write conditional on the ciphertext it read (optimistic
 * check), so a concurrent PUT /v1/stripe/config is never overwritten with an older value; such a
 * row is re-read and retried. Readers accept every configured key version throughout, so no
 * request sees an unreadable secret at any point. Safe to run again (already-current rows are skipped).
 */
import { Effect, Layer, Option } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import { StripeConfigRepo, type SecretColumn, type StoredStripeConfig } from "../repositories/StripeConfigRepo.js"
import { AuditLog } from "./AuditLog.js"
import { Encryption, EncryptionConfigError, ENV_VAR } from "./Encryption.js"

export interface RotationFailure {
  readonly tenantId: string
  readonly environmentId: string
  readonly secret: SecretColumn
  readonly keyVersion: string
  readonly reason: string
}

export interface RotationReport {
  readonly newestVersion: string
  readonly examined: number
  readonly rotated: number
  readonly alreadyCurrent: number
  /** Changed by someone else between read and write, after retries (the new value is theirs). */
  readonly changedConcurrently: number
  readonly failed: ReadonlyArray<RotationFailure>
}

const cipherOf = (row: StoredStripeConfig, column: SecretColumn) =>
  column === "api_key"
    ? row.apiKeyEncrypted
    : column === "webhook_secret"
    ? row.webhookSecretEncrypted
    : row.eventDestinationSecretEncrypted

const MAX_ATTEMPTS = 3

export const rotateKeys = Effect.fn("KeyRotation.rotate")(function* () {
  const repo = yield* StripeConfigRepo
  const encryption = yield* Encryption
  const audit = yield* AuditLog
  const newest = encryption.newestVersion
  const counts = { examined: 0, rotated: 0, alreadyCurrent: 0, changedConcurrently: 0 }
  const failed: Array<RotationFailure> = []

  const rotateOne = (scope: TenantScope, column: SecretColumn, initial: string) =>
    Effect.gen(function* () {
      let cipher: string | null = initial
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        if (cipher === null || !encryption.needsRotation(cipher)) {
          counts.alreadyCurrent++
          return
        }
        const from = Option.getOrElse(encryption.versionOf(cipher), () => "unknown")
        const plain = yield* Effect.either(encryption.decrypt(cipher))
        if (plain._tag === "Left") {
          failed.push({ tenantId: scope.tenantId, environmentId: scope.environmentId, secret: column, keyVersion: from, reason: plain.left.reason })
          yield* audit.record({
            action: "keys.rotate_failed",
            actor: "cli",
            target: column,
            scope,
            details: { from_version: from, reason: plain.left.reason }
          })
          return
        }
        const next = yield* encryption.encrypt(plain.right)
        const swapped = yield* repo.swapCiphertext(scope, column, cipher, next, newest)
        if (swapped) {
          counts.rotated++
          yield* audit.record({
            action: "keys.rotate",
            actor: "cli",
            target: column,
            scope,
            details: { operation: "key_rotation", from_version: from, to_version: newest }
          })
          return
        }
        // Someone wrote this secret meanwhile: look at what is there now.
        const fresh = yield* repo.getStoredFor(scope)
        cipher = Option.match(fresh, { onNone: () => null, onSome: (r) => cipherOf(r, column) })
      }
      counts.changedConcurrently++
    })

  const rows = yield* repo.listAllStored
  for (const row of rows) {
    for (const column of ["api_key", "webhook_secret", "event_destination_secret"] as const) {
      const c = cipherOf(row, column)
      if (c === null) continue
      counts.examined++
      yield* rotateOne(row.scope, column, c)
    }
  }
  const report: RotationReport = { newestVersion: newest, ...counts, failed }
  yield* audit.record({
    action: "keys.rotate_completed",
    actor: "cli",
    target: "all_secrets",
    scope: null,
    details: { newest_version: newest, ...counts, failed: failed.length }
  })
  yield* Effect.logInfo("key rotation finished").pipe(
    Effect.annotateLogs({ newest_version: newest, ...counts, failed: failed.length })
  )
  return report
})

/**
 * Start-up check: one stored secret per key version is decrypted with the configured master
 * keys. A missing or different key fails start-up with a message naming versions only, instead
 * of every Stripe call and webhook failing later. Not audited per boot: nothing leaves memory.
 */
export const verifyMasterKeys = Effect.fn("KeyRotation.verify")(function* () {
  const repo = yield* StripeConfigRepo
  const encryption = yield* Encryption
  const rows = yield* repo.listAllStored
  const seen = new Set<string>()
  for (const row of rows) {
    for (const cipher of [row.apiKeyEncrypted, row.webhookSecretEncrypted, row.eventDestinationSecretEncrypted]) {
      if (cipher === null) continue
      const version = Option.getOrElse(encryption.versionOf(cipher), () => "malformed")
      if (seen.has(version)) continue
      seen.add(version)
      const r = yield* Effect.either(encryption.decrypt(cipher))
      if (r._tag === "Left") {
        return yield* new EncryptionConfigError({
          code: "encryption_keys_invalid",
          message:
            r.left.reason === "unknown_key_version"
              ? `stored Stripe secrets were encrypted with master key version "${version}", which ${ENV_VAR} does not list (configured: ${encryption.versions.join(", ")}); add that key (newest first) and run \`flexprice keys rotate\``
              : `the master key configured as version "${version}" in ${ENV_VAR} does not decrypt the stored Stripe secrets (wrong key for that version)`
        })
      }
    }
  }
})

/** Fails the service's start when the master keys cannot read the stored secrets. */
export const MasterKeyCheckLive = Layer.effectDiscard(verifyMasterKeys())

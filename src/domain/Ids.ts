/**
 * Prefixed, branded identifiers. Generated ids are a prefix plus 24 random base32 characters
 * from node:crypto, so they sort nowhere in particular and reveal nothing.
 */
import { Schema } from "effect"
import { randomBytes } from "node:crypto"

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

export const randomToken = (length = 24): string => {
  const bytes = randomBytes(length)
  let out = ""
  for (let i = 0; i < length; i++) out += ALPHABET[bytes[i]! & 31]
  return out
}

const prefixed = <B extends string>(prefix: string, brand: B) =>
  Schema.String.pipe(
    Schema.pattern(new RegExp(`^${prefix}_[0-9A-Za-z]{1,64}$`), {
      message: () => `expected an id starting with "${prefix}_"`
    }),
    Schema.brand(brand)
  )

export const TenantId = prefixed("tnt", "TenantId")
export type TenantId = typeof TenantId.Type
export const EnvironmentId = prefixed("env", "EnvironmentId")
export type EnvironmentId = typeof EnvironmentId.Type
export const CustomerId = prefixed("cust", "CustomerId")
export type CustomerId = typeof CustomerId.Type
export const MeterId = prefixed("mtr", "MeterId")
export type MeterId = typeof MeterId.Type
export const EventId = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255), Schema.brand("EventId"))
export type EventId = typeof EventId.Type
export const SyncBatchId = prefixed("ssb", "SyncBatchId")
export type SyncBatchId = typeof SyncBatchId.Type
export const MigrationId = prefixed("mig", "MigrationId")
export type MigrationId = typeof MigrationId.Type

export const newId = {
  tenant: () => TenantId.make(`tnt_${randomToken()}`),
  environment: () => EnvironmentId.make(`env_${randomToken()}`),
  customer: () => CustomerId.make(`cust_${randomToken()}`),
  meter: () => MeterId.make(`mtr_${randomToken()}`),
  event: () => EventId.make(`evt_${randomToken()}`),
  syncBatch: () => SyncBatchId.make(`ssb_${randomToken()}`),
  migration: () => MigrationId.make(`mig_${randomToken()}`),
  apiKeyId: () => `key_${randomToken()}`,
  mapping: () => `cim_${randomToken()}`,
  meterMapping: () => `mpm_${randomToken()}`,
  webhookEvent: () => `whe_${randomToken()}`,
  audit: () => `aud_${randomToken()}`
}

/** The (tenant, environment) pair every row and every query is scoped by. */
export class TenantScope extends Schema.Class<TenantScope>("TenantScope")({
  tenantId: TenantId,
  environmentId: EnvironmentId
}) {}

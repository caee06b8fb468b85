/**
 * The deterministic identifier of a sync batch. It is both the Stripe meter event `identifier`
 * and the v1 Idempotency-Key, so a resend after a crash is deduplicated by Stripe (within its
 * 24 h horizon). Stripe allows at most 100 characters; hex is safe in both places.
 *
 *   fpsb1_<48 hex of SHA-256(tenant, env, customer, meter, event type, window start, sequence)>
 *
 * The fields are JSON-encoded before hashing so no two different tuples share an input.
 */
import { createHash } from "node:crypto"

export interface BatchKey {
  readonly tenantId: string
  readonly environmentId: string
  readonly customerId: string
  readonly meterId: string
  readonly eventType: string
  readonly windowStart: Date
  readonly sequence: number
}

export const IDENTIFIER_PREFIX = "fpsb1_"

export const batchIdentifier = (k: BatchKey): string =>
  IDENTIFIER_PREFIX +
  createHash("sha256")
    .update(
      JSON.stringify([
        k.tenantId,
        k.environmentId,
        k.customerId,
        k.meterId,
        k.eventType,
        k.windowStart.toISOString(),
        k.sequence
      ])
    )
    .digest("hex")
    .slice(0, 48)

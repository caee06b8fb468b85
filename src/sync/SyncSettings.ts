/**
 * Pipeline settings beyond the shared `SyncConfig` (src/config/AppConfig.ts), from environment
 * variables with defaults.
 */
import { Config } from "effect"
import { SyncConfig } from "../config/AppConfig.js"
import { integerSetting } from "../config/Settings.js"

const positiveInt = (name: string, fallback: number) => integerSetting(name, { default: fallback, min: 1 })

export const SyncSettings = Config.all({
  shared: SyncConfig,
  /** A lease not renewed for this long is free for another replica (renewed every third of it). */
  leaseSeconds: positiveInt("FLEXPRICE_SYNC_LEASE_SECONDS", 60),
  /**
   * Chunks in flight per tenant push (stream chunks of 100, or v1 calls), each with its ledger
   * writes; HTTP requests in flight stay bounded by STRIPE_METER_STREAM_MAX_CONCURRENCY (stream) or
   * STRIPE_MAX_CONCURRENCY (v1). Measured: BENCHMARKS.md, "Sync".
   */
  pushConcurrency: positiveInt("FLEXPRICE_SYNC_PUSH_CONCURRENCY", 16),
  /**
   * Pending batches read, marked `sending` and sent per page of the push (one page is read ahead
   * while the previous one is on the wire). Tests set it small to cross page boundaries.
   */
  pushPageSize: positiveInt("FLEXPRICE_SYNC_PUSH_PAGE_SIZE", 2000),
  /** Later runs retry a batch failed for a non-retryable reason this many times, then leave it failed. */
  maxRetries: positiveInt("FLEXPRICE_SYNC_MAX_RETRIES", 5),
  /**
   * A batch first sent longer ago than this is past Stripe's 24 h identifier dedup (with a
   * margin): it is checked against Stripe's meter event summaries before anything is resent.
   */
  resendHorizonHours: positiveInt("FLEXPRICE_SYNC_RESEND_HORIZON_HOURS", 23)
})
export type SyncSettings = Config.Config.Success<typeof SyncSettings>

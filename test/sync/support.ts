/**
 * What the sync suites share besides their layer (syncLayer.ts): the Stripe key and client
 * settings the service gets beside the emulator, the meter set-up's shape, random quantities and
 * the file's fixed hour that windows are named from.
 */
import { prng } from "../../src/domain/Prng.js"
import * as O from "../support/oracle.js"

export const STRIPE_KEY = "sk_test_51FlexpriceSyncTests000000SECRET4242"

export const stripeEnv = (url: string): Record<string, string> => ({
  STRIPE_API_BASE: url,
  STRIPE_METER_EVENTS_API_BASE: url,
  STRIPE_RATE_LIMIT_TEST_PER_SECOND: "10000",
  STRIPE_METER_STREAM_RATE_LIMIT_PER_SECOND: "10000",
  STRIPE_MAX_CONCURRENCY: "16",
  STRIPE_RETRY_RATE_LIMITED_BASE_MS: "2",
  STRIPE_RETRY_UNAVAILABLE_BASE_MS: "2",
  STRIPE_BREAKER_COOLDOWN_SECONDS: "0.2",
  STRIPE_API_TIMEOUT_SECONDS: "10"
})

export interface MeterSetup {
  readonly meterId: string
  readonly eventName: string
  readonly stripeEventName: string
  readonly providerMeterId: string
}

export { prng }

/** A random quantity with up to 3 decimals, as a string (exact). */
export const randomQty = (rand: () => number): string => {
  const thousandths = Math.floor(rand() * 100_000)
  return O.format({ unscaled: BigInt(thousandths), scale: 3 })
}

export const HOUR = 3_600_000

/**
 * The hour the test file started in. Fixed for the file: a test that ingests "2 hours ago" and
 * then a late event for the same hour must name the same window even when the wall clock crosses
 * an hour boundary between the two (CI runs for ~20 minutes; computed on each call, the base
 * moves at the boundary and a "late" event lands in the next window — a run crossing 14:00:00
 * timed out scheduled-reconciliation, whose late event is named so).
 * Windows named from it only get older as the file runs: still closed, still within Stripe's
 * horizons.
 */
export const FILE_HOUR = Math.floor(Date.now() / HOUR) * HOUR

export const hoursAgo = (h: number, minuteOffset = 0) => new Date(FILE_HOUR - h * HOUR + minuteOffset * 60_000).toISOString()

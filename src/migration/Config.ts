/** Settings of the background migration work (jobs, rollbacks, verifications). */
import { Config, Duration } from "effect"
import { integerSetting } from "../config/Settings.js"

export const MigrationRunnerConfig = Config.all({
  /** A running job or task whose heartbeat is older than this is claimed by the next scan. */
  staleSeconds: integerSetting("FLEXPRICE_MIGRATION_STALE_SECONDS", { default: 60, min: 1, why: "jobs heartbeat 4 times per period, at most every 10 s" }),
  scanSeconds: integerSetting("FLEXPRICE_MIGRATION_SCAN_SECONDS", { default: 30, min: 1 }),
  /**
   * Rows (CSV), entities (rollback) or mappings (verify) per chunk: each chunk is one short
   * transaction, and the embedded database's one connection serves other requests between them.
   */
  chunkRows: integerSetting("FLEXPRICE_MIGRATION_CHUNK_ROWS", { default: 100, min: 1, max: 10_000 })
})

/** Heartbeats come 4 times per stale period (at most every 10 s), so a live job is never taken for dead. */
export const heartbeatInterval = (staleSeconds: number) => Duration.millis(Math.min(10_000, Math.max(100, Math.floor((staleSeconds * 1000) / 4))))

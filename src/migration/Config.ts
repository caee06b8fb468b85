/** Settings of the background migration work (jobs, rollbacks, verifications). */
import { Config, Duration } from "effect"

export const MigrationRunnerConfig = Config.all({
  /** A running job or task whose heartbeat is older than this is claimed by the next scan. */
  staleSeconds: Config.integer("FLEXPRICE_MIGRATION_STALE_SECONDS").pipe(
    Config.withDefault(60),
    Config.validate({ message: "expected an integer ≥ 1 (jobs heartbeat 4 times per period, at most every 10 s)", validation: (n) => n >= 1 })
  ),
  scanSeconds: Config.integer("FLEXPRICE_MIGRATION_SCAN_SECONDS").pipe(
    Config.withDefault(30),
    Config.validate({ message: "expected an integer ≥ 1", validation: (n) => n >= 1 })
  ),
  /**
   * Rows (CSV), entities (rollback) or mappings (verify) per chunk: each chunk is one short
   * transaction, and the embedded database's one connection serves other requests between them.
   */
  chunkRows: Config.integer("FLEXPRICE_MIGRATION_CHUNK_ROWS").pipe(
    Config.withDefault(100),
    Config.validate({ message: "expected an integer between 1 and 10000", validation: (n) => n >= 1 && n <= 10_000 })
  )
})

/** Heartbeats come 4 times per stale period (at most every 10 s), so a live job is never taken for dead. */
export const heartbeatInterval = (staleSeconds: number) => Duration.millis(Math.min(10_000, Math.max(100, Math.floor((staleSeconds * 1000) / 4))))

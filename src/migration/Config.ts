/** Settings of the background migration work (jobs, rollbacks, verifications). */
import { Config, Duration } from "effect"
import { integerSetting } from "../config/Settings.js"

export const MigrationRunnerConfig = Config.all({
  /** A running job or task whose heartbeat is older than this is claimed by the next scan. */
  staleSeconds: integerSetting("FLEXPRICE_MIGRATION_STALE_SECONDS", { default: 60, min: 1, why: "jobs heartbeat 4 times per period, at most every 10 s" }),
  scanSeconds: integerSetting("FLEXPRICE_MIGRATION_SCAN_SECONDS", { default: 30, min: 1 }),
  /**
   * At most this many rows (CSV), entities (rollback) or mappings (verify) per chunk: each chunk
   * is one short transaction, and the embedded database's one connection serves other requests
   * between them.
   */
  chunkRows: integerSetting("FLEXPRICE_MIGRATION_CHUNK_ROWS", { default: 100, min: 1, max: 10_000 }),
  /**
   * What one chunk's transaction should take: chunks shrink (down to a quarter of chunkRows)
   * while they take longer, and grow back (up to chunkRows) while they are quicker, so a request
   * waiting for the connection waits about this long at most when the machine allows it.
   */
  chunkMillis: integerSetting("FLEXPRICE_MIGRATION_CHUNK_MS", { default: 40, min: 1, max: 60_000 }),
  /**
   * The pause after each chunk before the next chunk of any job starts, at least this long and
   * at least as long as the chunk took (capped at 1 s): requests' queries run in it, and
   * background work gets at most half of the database's time.
   */
  chunkPauseMillis: integerSetting("FLEXPRICE_MIGRATION_CHUNK_PAUSE_MS", { default: 10, min: 0, max: 10_000 }),
  /**
   * The "as long as the chunk took" part of that pause, in percent of the chunk's time (100:
   * background work gets at most half of the database's time; 0: only chunkPauseMillis). The
   * migration suites set 0: their requests are a few status polls, and the proportional pause
   * would double every job's wall time there.
   */
  chunkPausePercent: integerSetting("FLEXPRICE_MIGRATION_CHUNK_PAUSE_PERCENT", { default: 100, min: 0, max: 1_000 })
})
export type MigrationRunnerConfig = Config.Config.Success<typeof MigrationRunnerConfig>

/** Heartbeats come 4 times per stale period (at most every 10 s), so a live job is never taken for dead. */
export const heartbeatInterval = (staleSeconds: number) => Duration.millis(Math.min(10_000, Math.max(100, Math.floor((staleSeconds * 1000) / 4))))

/**
 * The fewest rows a chunk shrinks to: a chunk's statements cost the same few milliseconds each
 * whatever its size, so below this a slow (loaded) machine would spend its time on them and
 * an import would crawl without making chunks much shorter.
 */
const minChunkSize = (config: Pick<MigrationRunnerConfig, "chunkRows">) => Math.max(1, Math.ceil(config.chunkRows / 4))

/**
 * The size of the next chunk from how long the last one took: towards `chunkMillis`, at most
 * halved or doubled at a time, between a quarter of chunkRows and chunkRows.
 */
export const nextChunkSize = (config: Pick<MigrationRunnerConfig, "chunkRows" | "chunkMillis">, size: number, tookMillis: number): number => {
  const aimed = tookMillis <= 0 ? size * 2 : Math.floor((size * config.chunkMillis) / tookMillis)
  return Math.max(minChunkSize(config), Math.min(config.chunkRows, Math.max(Math.floor(size / 2), Math.min(size * 2, aimed))))
}

/** A job's first chunk is the smallest; later ones grow while they stay quick. */
export const firstChunkSize = minChunkSize

/**
 * Process configuration, from environment variables only (effect Config). Each variable has a
 * default listed in `.env.example`; a bad value stops start-up with one line naming the variable.
 */
import { Config, ConfigError, Either, Option, Redacted } from "effect"
import { integerSetting } from "./Settings.js"

const url = (name: string, schemes: ReadonlyArray<string>) =>
  Config.string(name).pipe(
    Config.withDefault(""),
    Config.validate({
      message: `expected empty or a URL starting with ${schemes.map((s) => `${s}://`).join(" or ")}`,
      validation: (s) => s === "" || schemes.some((scheme) => s.startsWith(`${scheme}://`))
    })
  )

/** host:port, e.g. 127.0.0.1:8080 (port 0 = any free port). */
const HostPort = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.withDefault(fallback),
    Config.mapOrFail((s) => {
      const m = /^(.*):(\d{1,5})$/.exec(s)
      const port = m ? Number(m[2]) : NaN
      return m && m[1] && port <= 65535
        ? Either.right({ host: m[1].replace(/^\[|\]$/g, ""), port })
        : Either.left(ConfigError.InvalidData([name], `expected host:port (e.g. ${fallback}), got ${JSON.stringify(s)}`))
    })
  )

export const DatabaseConfig = Config.all({
  /** empty → embedded PGlite in dataDir */
  url: url("FLEXPRICE_DATABASE_URL", ["postgres", "postgresql"]).pipe(
    Config.map((s) => (s === "" ? Option.none<Redacted.Redacted<string>>() : Option.some(Redacted.make(s))))
  ),
  dataDir: Config.string("FLEXPRICE_DATA_DIR").pipe(Config.withDefault("./.flexprice"))
})
export type DatabaseConfig = Config.Config.Success<typeof DatabaseConfig>

export const ClickHouseUrl = url("FLEXPRICE_CLICKHOUSE_URL", ["http", "https"])

export const HttpConfig = Config.all({
  addr: HostPort("FLEXPRICE_HTTP_ADDR", "127.0.0.1:8080"),
  publicUrl: Config.string("FLEXPRICE_PUBLIC_URL").pipe(Config.withDefault("")),
  maxBodyBytes: integerSetting("FLEXPRICE_MAX_BODY_BYTES", { default: 5 * 1024 * 1024, min: 1 })
})

/** Event ingestion. */
export const IngestConfig = Config.all({
  /**
   * How far ahead of the ingest clock an event's timestamp may be. Stripe refuses meter events
   * more than 5 minutes in the future ("Must be within the past 35 calendar days or up to 5
   * minutes in the future", docs.stripe.com/api/billing/meter-event/create, `timestamp`), so an
   * event further ahead could only be billed once its window is due, long after the client
   * was told it was accepted: it is refused per event (`timestamp_in_future`) instead.
   */
  maxFutureSeconds: integerSetting("FLEXPRICE_EVENT_MAX_FUTURE_SECONDS", { default: 300, min: 0 })
})

/**
 * Sync settings shared by the pipeline and the HTTP layer (requirements' env names). Each value is
 * validated before its default applies: validated after `withDefault`, a bad value's error loses
 * the variable's name.
 *
 * How the requirements' variables behave here:
 * - STRIPE_SYNC_GRACE_PERIOD_MINUTES (5): windows are due at end + grace. The grace is stored per
 *   tenant environment (`grace_period_minutes`, PUT /v1/stripe/config); the variable is the value
 *   a config gets when it is first stored without one. Changing the variable later does not move
 *   existing tenants' windows (their stored grace decides).
 * - STRIPE_BATCH_SIZE_LIMIT (10000, at most 10000): aggregate groups per aggregation page, the
 *   unit read from the event store and written to the ledger in one step. The requirements say
 *   "events per sync batch"; here a sync batch is one aggregate (one meter event), so the limit
 *   bounds aggregates per page, not the raw events summed into one aggregate.
 */
export const SyncConfig = Config.all({
  gracePeriodMinutes: integerSetting("STRIPE_SYNC_GRACE_PERIOD_MINUTES", { default: 5, min: 0 }),
  batchSizeLimit: integerSetting("STRIPE_BATCH_SIZE_LIMIT", { default: 10_000, min: 1, max: 10_000 }),
  /** how far behind "now" the ingestion watermark trails, so in-flight ingests are never skipped */
  watermarkLagSeconds: integerSetting("FLEXPRICE_WATERMARK_LAG_SECONDS", { default: 2, min: 0 }),
  scheduleEnabled: Config.boolean("FLEXPRICE_SCHEDULE_ENABLED").pipe(Config.withDefault(true)),
  scheduleIntervalSeconds: integerSetting("FLEXPRICE_SCHEDULE_INTERVAL_SECONDS", { default: 60, min: 1 }),
  tenantConcurrency: integerSetting("FLEXPRICE_SYNC_TENANT_CONCURRENCY", { default: 4, min: 1 })
})
export type SyncConfig = Config.Config.Success<typeof SyncConfig>

/** One line per problem: `FLEXPRICE_HTTP_ADDR: expected host:port ...`. */
export const formatConfigError = (error: ConfigError.ConfigError): string => {
  const lines: Array<string> = []
  const walk = (e: ConfigError.ConfigError): void => {
    switch (e._op) {
      case "And":
      case "Or":
        walk(e.left)
        walk(e.right)
        return
      case "InvalidData":
      case "MissingData":
      case "SourceUnavailable":
      case "Unsupported":
        lines.push(`configuration error: ${e.path.join(".")}: ${e.message}`)
        return
    }
  }
  walk(error)
  return [...new Set(lines)].join("\n")
}

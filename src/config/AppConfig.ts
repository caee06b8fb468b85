/**
 * Process configuration, from environment variables only (effect Config). Each variable has a
 * default listed in `.env.example`; a bad value stops start-up with one line naming the variable.
 */
import { Config, ConfigError, Either, Option, Redacted } from "effect"

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
  maxBodyBytes: Config.integer("FLEXPRICE_MAX_BODY_BYTES").pipe(
    Config.withDefault(5 * 1024 * 1024),
    Config.validate({ message: "expected a positive integer number of bytes", validation: (n) => n > 0 })
  )
})

/** Sync settings shared by the pipeline and the HTTP layer (requirements' env names). */
export const SyncConfig = Config.all({
  gracePeriodMinutes: Config.integer("STRIPE_SYNC_GRACE_PERIOD_MINUTES").pipe(
    Config.withDefault(5),
    Config.validate({ message: "expected an integer ≥ 0", validation: (n) => n >= 0 })
  ),
  batchSizeLimit: Config.integer("STRIPE_BATCH_SIZE_LIMIT").pipe(
    Config.withDefault(10_000),
    Config.validate({ message: "expected an integer between 1 and 10000", validation: (n) => n >= 1 && n <= 10_000 })
  ),
  /** how far behind "now" the ingestion watermark trails, so in-flight ingests are never skipped */
  watermarkLagSeconds: Config.integer("FLEXPRICE_WATERMARK_LAG_SECONDS").pipe(
    Config.withDefault(2),
    Config.validate({ message: "expected an integer ≥ 0", validation: (n) => n >= 0 })
  ),
  scheduleEnabled: Config.boolean("FLEXPRICE_SCHEDULE_ENABLED").pipe(Config.withDefault(true)),
  scheduleIntervalSeconds: Config.integer("FLEXPRICE_SCHEDULE_INTERVAL_SECONDS").pipe(
    Config.withDefault(60),
    Config.validate({ message: "expected an integer ≥ 1", validation: (n) => n >= 1 })
  ),
  tenantConcurrency: Config.integer("FLEXPRICE_SYNC_TENANT_CONCURRENCY").pipe(
    Config.withDefault(4),
    Config.validate({ message: "expected an integer ≥ 1", validation: (n) => n >= 1 })
  )
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

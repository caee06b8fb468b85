/**
 * Telemetry configuration, read from the standard OpenTelemetry variables (see Telemetry.ts for
 * the list and the one deliberate deviation: no network export without an endpoint).
 */
import { Config, ConfigError, Either, Option } from "effect"

export const DEFAULT_SERVICE_NAME = "flexprice-stripe-sync"

export type TracesExporter = "otlp" | "console" | "none"

export interface TelemetryConfig {
  readonly disabled: boolean
  readonly serviceName: string
  readonly serviceVersion: string | undefined
  readonly tracesExporter: TracesExporter
  readonly tracesEndpoint: string | undefined
  readonly metricsOtlp: boolean
  readonly metricsEndpoint: string | undefined
  readonly metricExportIntervalMillis: number
  readonly metricsAddr: string | undefined
}

const optionalString = (name: string) =>
  Config.string(name).pipe(
    Config.option,
    Config.map((o) => Option.getOrUndefined(Option.filter(o, (s) => s.trim() !== ""))?.trim())
  )

const join = (base: string, path: string) => `${base.replace(/\/+$/, "")}${path}`

export const TelemetryConfig: Config.Config<TelemetryConfig> = Config.all({
  disabled: Config.boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false)),
  serviceName: Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault(DEFAULT_SERVICE_NAME)),
  serviceVersion: optionalString("OTEL_SERVICE_VERSION"),
  endpoint: optionalString("OTEL_EXPORTER_OTLP_ENDPOINT"),
  tracesEndpoint: optionalString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
  metricsEndpoint: optionalString("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
  tracesExporter: optionalString("OTEL_TRACES_EXPORTER"),
  metricsExporter: optionalString("OTEL_METRICS_EXPORTER"),
  interval: Config.integer("OTEL_METRIC_EXPORT_INTERVAL").pipe(Config.withDefault(60_000)),
  metricsAddr: optionalString("FLEXPRICE_METRICS_ADDR")
}).pipe(
  Config.mapOrFail((c) => {
    const tracesEndpoint = c.tracesEndpoint ?? (c.endpoint ? join(c.endpoint, "/v1/traces") : undefined)
    const metricsEndpoint = c.metricsEndpoint ?? (c.endpoint ? join(c.endpoint, "/v1/metrics") : undefined)
    const requested = (c.tracesExporter ?? (tracesEndpoint ? "otlp" : "none")).split(",")[0]!.trim().toLowerCase()
    if (requested !== "otlp" && requested !== "console" && requested !== "none") {
      return Either.left(
        ConfigError.InvalidData(["OTEL_TRACES_EXPORTER"], `expected otlp, console or none, got "${requested}"`)
      )
    }
    const metricsExporters = (c.metricsExporter ?? "prometheus").split(",").map((s) => s.trim().toLowerCase())
    return Either.right<TelemetryConfig>({
      disabled: c.disabled,
      serviceName: c.serviceName,
      serviceVersion: c.serviceVersion,
      // `otlp` without an endpoint means "not configured": stay off the network.
      tracesExporter: requested === "otlp" && tracesEndpoint === undefined ? "none" : requested,
      tracesEndpoint,
      metricsOtlp: metricsExporters.includes("otlp") && metricsEndpoint !== undefined,
      metricsEndpoint,
      metricExportIntervalMillis: c.interval,
      metricsAddr: c.metricsAddr
    })
  })
)

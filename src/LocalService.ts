/**
 * The service in this process, from the same Layers as `serve`: the one start-up that the demo,
 * the benchmarks and the test apps share (#14 item 5), so a change to how the service is
 * assembled reaches all of them. Settings reach it through a ConfigProvider over the given map
 * (then, when asked, the process environment); nothing here reads or writes `process.env`.
 * The caller chooses the HTTP server (a Node server on FLEXPRICE_HTTP_ADDR, or
 * `NodeHttpServer.layerTest` whose client points at it) and what runs beside the API.
 */
import { ConfigProvider, Layer, Logger, type LogLevel } from "effect"
import { AppLive } from "./App.js"
import { HttpApiLive } from "./http/Server.js"

/** What the assembled service gives to effects run against it. */
export type AppServices = Layer.Layer.Success<typeof AppLive>

export interface LocalServiceOptions<S, SE, SIn, X, XE, B, BE> {
  /** The HTTP server the API is served on. */
  readonly server: Layer.Layer<S, SE, SIn>
  /** Settings by environment-variable name. */
  readonly settings: Readonly<Record<string, string>>
  /** Whether a setting the map lacks is read from the process environment. */
  readonly processEnvironment: boolean
  /** Run beside the API on the app's services (a scheduler), or `Layer.empty`. */
  readonly beside: Layer.Layer<X, XE, AppServices>
  /** Built first, under the settings, and kept in the result (telemetry, a log capture), or `Layer.empty`. */
  readonly below: Layer.Layer<B, BE>
  /** The lowest log level let through. */
  readonly logLevel: LogLevel.LogLevel
}

export const localService = <S, SE, SIn, X, XE, B, BE>(options: LocalServiceOptions<S, SE, SIn, X, XE, B, BE>) => {
  const fromMap = ConfigProvider.fromMap(new Map(Object.entries(options.settings)))
  const provider = options.processEnvironment ? fromMap.pipe(ConfigProvider.orElse(() => ConfigProvider.fromEnv())) : fromMap
  return Layer.merge(HttpApiLive.pipe(Layer.provideMerge(options.server)), options.beside).pipe(
    Layer.provideMerge(AppLive),
    Layer.provideMerge(options.below),
    Layer.provide(Layer.setConfigProvider(provider)),
    Layer.provide(Logger.minimumLogLevel(options.logLevel))
  )
}

#!/usr/bin/env node
/**
 * The flexprice CLI. Every command composes its Layers here (one wiring place per entry point);
 * logs go to stderr so stdout stays machine-readable (`tenant create` prints one JSON object).
 */
import { Command, Options } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, ConfigError, Console, Effect, Layer, Logger, LogLevel, Option } from "effect"
import { AppLive } from "../App.js"
import { DatabaseConfig, formatConfigError, LogLevelConfig } from "../config/AppConfig.js"
import * as Database from "../db/Database.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { HttpServerLive } from "../http/Server.js"

const serve = Command.make("serve", {}, () =>
  Effect.gen(function* () {
    const db = yield* DatabaseConfig
    yield* Effect.logInfo(`starting flexprice with ${Database.describe(db)}`)
    return yield* Layer.launch(HttpServerLive.pipe(Layer.provide(AppLive)))
  })
).pipe(Command.withDescription("Run the HTTP API and the hourly Stripe sync schedule (migrations run first)"))

const migrate = Command.make("migrate", {}, () =>
  Effect.gen(function* () {
    const db = yield* DatabaseConfig
    yield* Effect.scoped(Layer.build(Database.layerMigrated(db).pipe(Layer.provide(NodeContext.layer))))
    yield* Effect.logInfo(`migrations up to date (${Database.describe(db)})`)
  })
).pipe(Command.withDescription("Apply database migrations and exit"))

const tenantCreate = Command.make(
  "create",
  {
    name: Options.text("name").pipe(Options.withDescription("tenant name")),
    environment: Options.text("environment").pipe(Options.withDefault("production"), Options.withDescription("environment name"))
  },
  ({ name, environment }) =>
    Effect.gen(function* () {
      const repo = yield* TenantRepo
      const created = yield* repo.create(name, environment)
      yield* Console.log(
        JSON.stringify({ tenant_id: created.tenantId, environment_id: created.environmentId, api_key: created.apiKey })
      )
    }).pipe(Effect.provide(AppLive))
).pipe(Command.withDescription("Create a tenant environment and an API key; prints {tenant_id, environment_id, api_key}"))

const tenant = Command.make("tenant").pipe(Command.withSubcommands([tenantCreate]))

export const commands = [serve, migrate, tenant] as const

const root = Command.make("flexprice").pipe(Command.withSubcommands([...commands]))

const cli = Command.run(root, { name: "flexprice", version: "0.1.0" })

const StderrLogger = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))

/** A configuration error is one line per variable, not a stack trace. */
const reportFailure = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.catchAllCause((cause) => {
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure) && ConfigError.isConfigError(failure.value)) {
        process.stderr.write(`${formatConfigError(failure.value)}\n`)
        return Effect.sync(() => process.exit(2))
      }
      if (Cause.isInterruptedOnly(cause)) return Effect.void
      const message = Option.match(failure, {
        onSome: (e) => (e instanceof Error ? e.message : String(e)),
        onNone: () => Cause.pretty(cause)
      })
      process.stderr.write(`flexprice: ${message}\n`)
      return Effect.sync(() => process.exit(1))
    })
  )

Effect.suspend(() => cli(process.argv)).pipe(
  reportFailure,
  Effect.provide(NodeContext.layer),
  Effect.provide(StderrLogger),
  Effect.provide(Layer.unwrapEffect(Effect.map(Effect.orElseSucceed(LogLevelConfig, () => undefined), (l) => Logger.minimumLogLevel(l ?? LogLevel.Info)))),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)

#!/usr/bin/env node
/**
 * The flexprice CLI. Every command composes its Layers here (one wiring place per entry point);
 * logs go to stderr so stdout stays machine-readable (`tenant create` prints one JSON object).
 */
import { Command, Options } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, ConfigError, Console, Effect, Layer, Option } from "effect"
import { AppLive } from "../App.js"
import { DatabaseConfig, formatConfigError } from "../config/AppConfig.js"
import * as Database from "../db/Database.js"
import { tenant } from "./TenantCli.js"
import { HttpServerLive } from "../http/Server.js"
import { Logging } from "../observability/Logging.js"
import { Telemetry } from "../observability/Telemetry.js"
import { runStandalone } from "../stripe-emulator/index.js"
import { SyncScheduler } from "../sync/index.js"
import { ReconciliationSchedulerLive } from "../sync/ScheduledReconciliation.js"
import { rotateKeys } from "../security/KeyRotation.js"
import { RetentionLive } from "../db/Retention.js"
import { PendingSweeperLive } from "../events/PendingSweeper.js"
import { stripeMigrateCommand } from "../migration/Cli.js"
import { demoCommand } from "../demo/index.js"

const serve = Command.make("serve", {}, () =>
  Effect.gen(function* () {
    const db = yield* DatabaseConfig
    yield* Effect.logInfo(`starting flexprice with ${Database.describe(db)}`)
    return yield* Layer.launch(
      Layer.mergeAll(HttpServerLive, SyncScheduler.layer, ReconciliationSchedulerLive, RetentionLive, PendingSweeperLive).pipe(Layer.provide(AppLive), Layer.provide(Telemetry.layer))
    )
  })
).pipe(Command.withDescription("Run the HTTP API and the hourly Stripe sync schedule (migrations run first)"))

const stripeEmulator = Command.make(
  "stripe-emulator",
  {
    port: Options.integer("port").pipe(Options.withDefault(12111), Options.withDescription("port to listen on (0 = any free port)")),
    host: Options.text("host").pipe(Options.withDefault("127.0.0.1")),
    apiKey: Options.text("api-key").pipe(Options.withDefault("sk_test_emulator"), Options.withDescription("the API key clients must send")),
    webhookUrl: Options.text("webhook-url").pipe(Options.optional, Options.withDescription("where to send signed customer.* webhooks")),
    webhookSecret: Options.text("webhook-secret").pipe(Options.withDefault("whsec_emulator"))
  },
  ({ port, host, apiKey, webhookUrl, webhookSecret }) =>
    runStandalone({
      port,
      host,
      apiKey,
      ...(Option.isSome(webhookUrl) ? { webhook: { url: webhookUrl.value, secret: webhookSecret } } : {})
    })
).pipe(Command.withDescription("Run the in-memory Stripe emulator (tests, demo, benchmarks); no real Stripe is contacted"))

const migrate = Command.make("migrate", {}, () =>
  Effect.gen(function* () {
    const db = yield* DatabaseConfig
    yield* Effect.scoped(Layer.build(Database.layerMigrated(db).pipe(Layer.provide(NodeContext.layer))))
    yield* Effect.logInfo(`migrations up to date (${Database.describe(db)})`)
  })
).pipe(Command.withDescription("Apply database migrations and exit"))


const keysRotate = Command.make("rotate", {}, () =>
  Effect.gen(function* () {
    const report = yield* rotateKeys()
    yield* Console.log(JSON.stringify(report))
    if (report.failed.length > 0) return yield* Effect.fail(new Error(`${report.failed.length} secret(s) could not be re-encrypted`))
  }).pipe(Effect.provide(AppLive))
).pipe(
  Command.withDescription(
    "Re-encrypt every stored secret under the newest FLEXPRICE_ENCRYPTION_KEYS key (safe while serve runs); prints a JSON report"
  )
)

const keys = Command.make("keys").pipe(Command.withSubcommands([keysRotate]))

export const commands = [serve, migrate, tenant, keys, stripeMigrateCommand, stripeEmulator, demoCommand] as const

const root = Command.make("flexprice").pipe(Command.withSubcommands([...commands]))

const cli = Command.run(root, { name: "flexprice", version: "0.1.0" })


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
  Effect.provide(Logging.layer),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)

/**
 * Wiring: one place per entry point composes the Layers. `AppLive` is everything the service
 * needs except the HTTP server and the scheduler, which `serve` (and tests) add on top.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { ClickHouseUrl } from "./config/AppConfig.js"
import { CustomerService } from "./customers/CustomerService.js"
import * as Database from "./db/Database.js"
import { EventIngestor } from "./events/EventIngestor.js"
import * as ClickHouseEventStore from "./events/ClickHouseEventStore.js"
import { IngestWatermark } from "./events/IngestWatermark.js"
import * as PgEventStore from "./events/PgEventStore.js"
import { CustomerRepo } from "./repositories/CustomerRepo.js"
import { MeterRepo } from "./repositories/MeterRepo.js"
import { TenantRepo } from "./repositories/TenantRepo.js"

/** PostgreSQL tables unless FLEXPRICE_CLICKHOUSE_URL is set. */
export const EventStoreLive = Layer.unwrapEffect(
  Effect.map(ClickHouseUrl, (url) => (url === "" ? PgEventStore.layer : ClickHouseEventStore.layer))
)

/** Relational database from the environment, migrated on start. */
export const DatabaseLive = Database.layerMigratedFromEnv.pipe(Layer.provide(NodeContext.layer))

/** Repositories and domain services over a given database + event store. */
export const ServicesLive = Layer.mergeAll(
  TenantRepo.Default,
  CustomerRepo.Default,
  MeterRepo.Default,
  IngestWatermark.Default,
  EventIngestor.Default,
  CustomerService.Default
).pipe(Layer.provideMerge(EventStoreLive))

export const AppLive = ServicesLive.pipe(Layer.provideMerge(DatabaseLive))

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
import { CustomerLinker } from "./customers/CustomerLinker.js"
import { CustomerMappingRepo } from "./repositories/CustomerMappingRepo.js"
import { MeterMappingRepo } from "./repositories/MeterMappingRepo.js"
import { StripeConfigRepo } from "./repositories/StripeConfigRepo.js"
import { AuditLog } from "./security/AuditLog.js"
import { Encryption } from "./security/Encryption.js"
import { StripeAccounts } from "./stripe/StripeAccounts.js"
import { StripeClient } from "./stripe/StripeClient.js"
import { WebhookEventRepo } from "./repositories/WebhookEventRepo.js"
import { LedgerArchiveRepo } from "./repositories/LedgerArchiveRepo.js"
import { WindowGridRepo } from "./repositories/WindowGridRepo.js"
import { WebhookProcessor } from "./webhooks/WebhookProcessor.js"
import { EventDestination } from "./webhooks/EventDestination.js"
import { BatchRepairRepo } from "./repositories/BatchRepairRepo.js"
import { MasterKeyCheckLive } from "./security/KeyRotation.js"
import { SyncLive } from "./sync/index.js"
import { MigrationLive } from "./migration/index.js"
import { ErrorReporter } from "./observability/ErrorReporter.js"

/** PostgreSQL tables unless FLEXPRICE_CLICKHOUSE_URL is set. */
export const EventStoreLive = Layer.unwrapEffect(
  Effect.map(ClickHouseUrl, (url) => (url === "" ? PgEventStore.layer : ClickHouseEventStore.layer))
)

/** Relational database from the environment, migrated on start. */
export const DatabaseLive = Database.layerMigratedFromEnv.pipe(Layer.provide(NodeContext.layer))

/**
 * Stripe integration: client (STRIPE_* variables), encryption (FLEXPRICE_ENCRYPTION_KEYS or the
 * embedded key file), config/mapping repositories, decrypted accounts, the customer linker.
 * Services that need StripeAccounts/CustomerLinker are added to StripeServicesLive's first mergeAll.
 */
export const StripeBaseLive = Layer.mergeAll(
  StripeClient.layer,
  ErrorReporter.layerFromEnv,
  Encryption.layerFromEnv,
  AuditLog.Default,
  StripeConfigRepo.Default,
  MeterMappingRepo.Default,
  CustomerMappingRepo.Default,
  WebhookEventRepo.Default,
  WindowGridRepo.Default,
  BatchRepairRepo.Default,
  LedgerArchiveRepo.Default
)

export const StripeServicesLive = Layer.mergeAll(WebhookProcessor.Default, EventDestination.Default, MasterKeyCheckLive).pipe(
  Layer.provideMerge(Layer.mergeAll(StripeAccounts.Default, CustomerLinker.DefaultWithoutDependencies)),
  Layer.provideMerge(StripeBaseLive)
)

/** Repositories and domain services over a given database + event store. */
export const ServicesLive = Layer.mergeAll(
  TenantRepo.Default,
  CustomerRepo.Default,
  MeterRepo.Default,
  IngestWatermark.Default,
  EventIngestor.Default,
  CustomerService.Default
).pipe(
  (core) => Layer.provideMerge(StripeServicesLive, core),
  (services) => Layer.provideMerge(SyncLive, services),
  (services) => Layer.provideMerge(MigrationLive, services),
  Layer.provideMerge(EventStoreLive)
)

export const AppLive = ServicesLive.pipe(Layer.provideMerge(DatabaseLive))

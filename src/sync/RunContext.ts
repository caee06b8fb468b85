/**
 * What one sync run works with, as records rather than long parameter lists: the services the
 * pipeline uses (`SyncDeps`, built once with the SyncPipeline service), the run's own facts
 * (`RunContext`: tenant, config, the clock instant and ingest watermark read at its start, the
 * enabled mappings) and the push's mutable tallies (`PushCounters`). Every stage module takes
 * these records, so a stage reads the same instant and mappings as the rest of its run.
 *
 * The report types live here (re-exported by SyncPipeline) so stage modules can build them
 * without importing the pipeline.
 */
import type { PgClient } from "@effect/sql-pg"
import type { SqlError } from "@effect/sql"
import type { Either, Option, Ref } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import type { EventStoreShape } from "../events/EventStore.js"
import type { ErrorReporterService } from "../observability/ErrorReporter.js"
import type { BatchRepairRepo } from "../repositories/BatchRepairRepo.js"
import type { CustomerMappingRepo } from "../repositories/CustomerMappingRepo.js"
import type { MeterMapping } from "../repositories/MeterMappingRepo.js"
import type { StripeConfigRepo, TenantStripeConfig } from "../repositories/StripeConfigRepo.js"
import type { SyncBatchRepo } from "../repositories/SyncBatchRepo.js"
import type { DecryptionFailed } from "../security/Encryption.js"
import type { StripeAccounts, StripeNotConfigured } from "../stripe/StripeAccounts.js"
import type { StripeAccountRef, StripeClientService } from "../stripe/StripeClient.js"
import type { CustomerLookup } from "./CustomerLookup.js"
import type { MeterSupport } from "./MeterSupport.js"
import type { Grid } from "./WindowGrid.js"
import type { SyncSettings } from "./SyncSettings.js"

export type Trigger = "schedule" | "manual"

export interface RunOptions {
  readonly trigger: Trigger
  /** Manual sync: only windows starting in [from, to), all of which must be due. */
  readonly windows?: { readonly from: Date; readonly to: Date } | undefined
  /** Aggregate and report what would be sent; write and send nothing. */
  readonly dryRun?: boolean | undefined
  /**
   * Manual sync, read-your-writes: the ingest-clock instant the request arrived. Every event
   * acknowledged before it is included (the run waits, bounded, for the watermark to reach it).
   */
  readonly acknowledgedBefore?: Date | undefined
}

export interface WindowReport {
  readonly windowStart: Date
  readonly windowEnd: Date
  /** aggregate groups found in this pass (new rows since the window's previous watermark) */
  readonly groups: number
  /** Σ aggregated quantity of those groups */
  readonly quantity: string
  /** Σ of what this pass sends (or would send) to Stripe */
  readonly sendQuantity: string
  readonly batchesCreated: number
  readonly pending: number
  readonly skipped: number
}

export interface RunReport {
  readonly runId: string | null
  readonly status: "completed" | "partial" | "failed" | "dry_run"
  readonly watermark: Date
  readonly windows: ReadonlyArray<WindowReport>
  readonly batchesCreated: number
  readonly batchesSynced: number
  readonly batchesFailed: number
  readonly batchesSkipped: number
  /** Stripe requests made for meter events in this run */
  readonly stripeRequests: number
  /**
   * Read-your-writes: processed rows of the range acknowledged before the request but above the
   * watermark the run could reach within its bounded wait (0 when it reached the request).
   */
  readonly excludedEvents: number
  readonly error: string | null
}

/** The services every stage uses (resolved once when SyncPipeline is built). */
export interface SyncDeps {
  readonly sql: PgClient.PgClient
  readonly store: EventStoreShape
  readonly repo: SyncBatchRepo
  /** re-queues of batches Stripe dropped (error reports) once their mapping changed */
  readonly repairs: BatchRepairRepo
  readonly customerMappings: CustomerMappingRepo
  readonly accounts: StripeAccounts
  readonly stripe: StripeClientService
  readonly settings: SyncSettings
  readonly reporter: ErrorReporterService
  /** the pause after Stripe refuses the tenant's key (Push.ts) */
  readonly configs: StripeConfigRepo
}

/** Aligned window bounds of a manual range: [from, to). */
export interface WindowRange {
  readonly from: Date
  readonly to: Date
}

/** One run's facts, read once at its start. */
export interface RunContext {
  readonly deps: SyncDeps
  readonly scope: TenantScope
  readonly config: TenantStripeConfig
  /** window sizes over time (WindowGrid.ts): every window of the run is cut on it */
  readonly grid: Grid
  /** the run's clock instant (ms): due windows, horizons and ledger times of the ledger pass */
  readonly now: number
  /** ingest watermark: rows ingested before it are aggregated in this run */
  readonly watermark: Date
  readonly dryRun: boolean
  /** manual runs only */
  readonly range: WindowRange | undefined
  /** enabled mappings by FlexPrice meter id */
  readonly mappingByMeter: ReadonlyMap<string, MeterMapping>
  /** customers' Stripe ids, each read at most once per run (CustomerLookup.ts) */
  readonly customers: CustomerLookup
  /** meters whose formula, aggregation and Stripe meter can receive window sums (MeterSupport.ts) */
  readonly supported: MeterSupport
  readonly meterIds: ReadonlyArray<string>
  /**
   * The tenant's Stripe account, resolved once per run: planning (meter checks) and the push use
   * the same answer, so a missing or undecryptable key is met — counted, audited — once per run.
   */
  readonly account: Either.Either<StripeAccountRef, StripeNotConfigured | DecryptionFailed | SqlError.SqlError>
}

/** One due window and, per meter, the exclusive lower bound on ingested_at (None: from the beginning). */
export interface WindowWork {
  readonly start: Date
  readonly meters: Map<string, Option.Option<Date>>
}

/**
 * The push's tallies; `stop` names the error that ended pushing in this run, `deferred` the
 * first transient error that left a batch pending while the push went on.
 */
export interface PushCounters {
  synced: number
  failed: number
  skipped: number
  requests: number
  stop: string | null
  deferred: string | null
}

/** The push stage's records: its run, the tenant's Stripe account and the shared tallies. */
export interface PushContext {
  readonly run: RunContext
  readonly ref: StripeAccountRef
  readonly counters: Ref.Ref<PushCounters>
}

/** The demo's options, its report and the API answers it reads (shared by the phases and Report.ts). */
import { Data } from "effect"
import type { ReconciliationReport } from "../sync/Reconciliation.js"

export class DemoFailed extends Data.TaggedError("DemoFailed")<{ readonly message: string }> {}

export interface DemoOptions {
  /** Stripe customers onboarded by webhooks (default 200). */
  readonly customers?: number
  /** Usage events in the hour (default 60,000). */
  readonly events?: number
  /** Late events for the same hour after the first sync (default 1% of events, at least 10). */
  readonly late?: number
  /** Inject 429s and 5xx into the meter event calls of the first sync (default true). */
  readonly faults?: boolean
  /** Keep the embedded data directory (default false: removed at the end). */
  readonly keep?: boolean
  /** PRNG seed of the usage (default 20_240_601). */
  readonly seed?: number
  /** Extra configuration, read before the process environment (tests). */
  readonly env?: Readonly<Record<string, string>>
  /** Print progress lines and the final report (default true). */
  readonly print?: boolean
  /**
   * Serve from this existing embedded data directory instead of a fresh one, which is not removed
   * (tests: a copy of the migrated template, saving a fresh directory's initdb and migrations;
   * `flexprice demo` never sets it). Ignored when FLEXPRICE_DATABASE_URL is set.
   */
  readonly dataDir?: string
}

export interface MeterSummary {
  readonly meter: string
  readonly meterId: string
  readonly stripeMeterId: string
  readonly events: number
  /** Σ generated for every customer (mapped or not). */
  readonly expectedAll: string
  /** Σ generated for customers with a Stripe customer. */
  readonly expectedMapped: string
  /** Σ aggregated quantity over every ledger batch (our billable total). */
  readonly ledgerTotal: string
  /** Σ sent quantity of synced batches. */
  readonly ledgerSynced: string
  /** Σ the emulator received for the Stripe meter's event name. */
  readonly stripeReceived: string
  readonly batchesSynced: number
  /** Batches a run left pending (transient Stripe failure) that a later run synced. */
  readonly batchesRetried: number
  readonly lateDeltas: number
  readonly batchesSkipped: number
  readonly skippedQuantity: string
  readonly batchesFailed: number
  readonly batchesPending: number
}

export interface PhaseTiming {
  readonly phase: string
  readonly ms: number
  readonly detail: string
}

export interface SyncRunSummary {
  readonly trigger: "manual" | "schedule"
  readonly status: string
  readonly batchesCreated: number
  readonly batchesSynced: number
  readonly batchesSkipped: number
  readonly batchesFailed: number
  readonly stripeRequests: number | null
}

export interface DemoReport {
  readonly ok: boolean
  readonly failures: ReadonlyArray<string>
  readonly backend: string
  readonly dataDir: string | null
  readonly serviceUrl: string
  readonly emulatorUrl: string
  readonly window: { readonly start: string; readonly end: string }
  readonly customers: { readonly onboarded: number; readonly unmappedStripe: number; readonly withoutStripe: number }
  readonly webhooks: {
    readonly deliveries: number
    readonly non2xx: number
    readonly byStatus: Readonly<Record<string, number>>
    /** Deliveries of an event already delivered (the emulator's duplicate). */
    readonly duplicateDeliveries: number
    /** Every duplicated event has exactly one row in the webhook event log. */
    readonly duplicateRecordedOnce: boolean
    /** `flexprice_webhooks_total{outcome="duplicate"}` from /metrics (null: no /metrics). */
    readonly duplicatesAnswered: number | null
    readonly reorderedFinalEmail: string | null
    readonly reorderedExpectedEmail: string
  }
  readonly ingest: { readonly events: number; readonly late: number; readonly ms: number; readonly eventsPerSecond: number }
  readonly runs: ReadonlyArray<SyncRunSummary>
  readonly meters: ReadonlyArray<MeterSummary>
  readonly pairs: { readonly checked: number; readonly mismatched: number }
  readonly stripe: {
    readonly callsByPhase: Readonly<Record<string, number>>
    readonly callsByEndpoint: Readonly<Record<string, number>>
    readonly faultResponses: { readonly rateLimited: number; readonly serverErrors: number; readonly dropped: number }
    /** `flexprice_stripe_retries_total` during the first sync, from /metrics (null: no /metrics). */
    readonly clientRetries: number | null
    readonly meterEventsAccepted: number
    readonly streamErrors: number
  }
  /** the reconciliation endpoint's summary (read over HTTP) */
  readonly reconciliation: ReconciliationReport["summary"]
  readonly status: unknown
  readonly phases: ReadonlyArray<PhaseTiming>
  readonly wallMs: number
}

// ------------------------------------------------------------------ the API answers the demo reads

export interface BatchView {
  readonly id: string
  readonly meter_id: string
  readonly customer_id: string
  readonly sequence: number
  readonly aggregated_quantity: string
  readonly sent_quantity: string | null
  readonly sync_status: "pending" | "sending" | "synced" | "failed" | "skipped"
  readonly skip_reason: string | null
  readonly error_code: string | null
}


export interface ManualSyncAnswer {
  readonly status: string
  readonly batches_created: number
  readonly batches_synced: number
  readonly batches_failed: number
  readonly batches_skipped: number
  readonly stripe_requests: number
  readonly error: string | null
}


export interface SyncRunView {
  readonly trigger: string
  readonly status: string
  readonly started_at: string
  readonly finished_at: string | null
  readonly batches_created: number
  readonly batches_synced: number
  readonly batches_failed: number
  readonly batches_skipped: number
}


export interface ReconciliationSummary {
  readonly pairs: number
  readonly rows: number
  readonly rows_with_drift: number
  readonly synced_total: string
  readonly stripe_total: string
  readonly drift_total: string
  readonly unavailable_pairs: number
}

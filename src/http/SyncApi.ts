/**
 * The sync endpoints (SPEC §6, §10): manual sync, status, the batch ledger, reconciliation with
 * Stripe's meter event summaries. Quantities are decimal strings.
 */
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { BatchCursor } from "./Cursors.js"
import { Instant } from "./Params.js"
import { Authentication } from "./Security.js"

const Status = Schema.Literal("pending", "sending", "synced", "failed", "skipped")

export const ManualSyncRequest = Schema.Struct({
  window_start: Instant.annotations({ description: "RFC 3339; windows overlapping [window_start, window_end) are synced" }),
  window_end: Instant.annotations({ description: "RFC 3339, exclusive" }),
  dry_run: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

export const WindowResult = Schema.Struct({
  window_start: Schema.String,
  window_end: Schema.String,
  groups: Schema.Int.annotations({ description: "aggregate groups new in this pass" }),
  quantity: Schema.String.annotations({ description: "Σ aggregated quantity of those groups" }),
  send_quantity: Schema.String.annotations({ description: "Σ sent (or, on a dry run, that would be sent) to Stripe" }),
  batches_created: Schema.Int,
  batches: Schema.Struct({ pending: Schema.Int, sending: Schema.Int, synced: Schema.Int, failed: Schema.Int, skipped: Schema.Int })
})

export const ManualSyncResult = Schema.Struct({
  run_id: Schema.NullOr(Schema.String),
  dry_run: Schema.Boolean,
  status: Schema.Literal("completed", "partial", "failed", "dry_run"),
  watermark: Schema.String,
  windows: Schema.Array(WindowResult),
  batches_created: Schema.Int,
  batches_synced: Schema.Int,
  batches_failed: Schema.Int,
  batches_skipped: Schema.Int,
  stripe_requests: Schema.Int,
  excluded_events: Schema.Int.annotations({
    description:
      "processed rows of the range acknowledged before this request that the run could not include within its bounded wait for the ingest watermark (0: every event acknowledged before the request is in this run)"
  }),
  error: Schema.NullOr(Schema.String)
})

export const SyncRun = Schema.Struct({
  id: Schema.String,
  trigger: Schema.String,
  status: Schema.String,
  started_at: Schema.String,
  finished_at: Schema.NullOr(Schema.String),
  windows: Schema.Int,
  batches_created: Schema.Int,
  batches_synced: Schema.Int,
  batches_failed: Schema.Int,
  batches_skipped: Schema.Int,
  error: Schema.NullOr(Schema.String)
})

export const SyncStatus = Schema.Struct({
  configured: Schema.Boolean,
  sync_enabled: Schema.Boolean,
  paused: Schema.NullOr(
    Schema.Struct({
      code: Schema.String.annotations({ description: "Stripe's refusal, e.g. stripe_authentication_failed" }),
      message: Schema.String,
      since: Schema.String
    })
  ).annotations({
    description:
      "set after Stripe refused the API key (401/403, e.g. a rolled key): nothing is sent and no batch is charged an attempt until PUT /v1/stripe/config changes the configuration or POST /v1/stripe/config/test succeeds"
  }),
  transport: Schema.NullOr(Schema.String),
  aggregation_window_minutes: Schema.NullOr(Schema.Int),
  grace_period_minutes: Schema.NullOr(Schema.Int),
  last_run: Schema.NullOr(SyncRun),
  success_rate_24h: Schema.NullOr(Schema.Number),
  counts: Schema.Struct({ pending: Schema.Int, sending: Schema.Int, synced: Schema.Int, failed: Schema.Int, skipped: Schema.Int }),
  skipped_by_reason: Schema.Record({ key: Schema.String, value: Schema.Int }),
  oldest_unsynced_window: Schema.NullOr(Schema.String),
  lag_seconds: Schema.Struct({ p50: Schema.NullOr(Schema.Number), p95: Schema.NullOr(Schema.Number) }),
  circuit_state: Schema.String
})

export const SyncBatch = Schema.Struct({
  id: Schema.String,
  customer_id: Schema.String,
  meter_id: Schema.String,
  event_type: Schema.String,
  window_start: Schema.String,
  window_end: Schema.String,
  sequence: Schema.Int,
  aggregated_quantity: Schema.String,
  sent_quantity: Schema.NullOr(Schema.String),
  event_count: Schema.Int,
  identifier: Schema.String,
  provider_meter_id: Schema.NullOr(Schema.String),
  sync_status: Status,
  skip_reason: Schema.NullOr(Schema.String),
  retry_count: Schema.Int,
  error_code: Schema.NullOr(Schema.String),
  error_message: Schema.NullOr(Schema.String),
  watermark: Schema.String,
  first_sent_at: Schema.NullOr(Schema.String),
  created_at: Schema.String,
  synced_at: Schema.NullOr(Schema.String)
})

export const ReconciliationRow = Schema.Struct({
  customer_id: Schema.String,
  stripe_customer_id: Schema.NullOr(Schema.String),
  meter_id: Schema.String,
  stripe_meter_id: Schema.NullOr(Schema.String),
  hour: Schema.String,
  synced: Schema.String,
  stripe: Schema.NullOr(Schema.String),
  drift: Schema.String.annotations({ description: "stripe − synced; \"0\" when equal" })
})

export const Reconciliation = Schema.Struct({
  from: Schema.String,
  to: Schema.String,
  rows: Schema.Array(ReconciliationRow),
  summary: Schema.Struct({
    pairs: Schema.Int,
    rows: Schema.Int,
    rows_with_drift: Schema.Int,
    synced_total: Schema.String,
    stripe_total: Schema.String,
    drift_total: Schema.String,
    unavailable_pairs: Schema.Int
  })
})

export const BatchRetryRequest = Schema.Struct({
  status: Schema.optionalWith(Schema.Literal("failed", "needs_review"), { default: () => "failed" as const }).annotations({
    description:
      "failed: batches Stripe refused (any error code but needs_review); needs_review: batches the resend guard held because Stripe's summary matched neither outcome"
  }),
  meter_id: Schema.optional(Schema.String),
  customer_id: Schema.optional(Schema.String),
  error_code: Schema.optional(Schema.String.annotations({ description: "the batch's error_code, e.g. Stripe's resource_missing" })),
  from: Schema.optional(Instant.annotations({ description: "RFC 3339: windows starting at or after" })),
  to: Schema.optional(Instant.annotations({ description: "RFC 3339: windows starting before" })),
  dry_run: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

export const BatchRetryResult = Schema.Struct({
  requeued: Schema.Int.annotations({ description: "batches put back to pending (on a dry run: that would be)" }),
  dry_run: Schema.Boolean,
  batch_ids: Schema.Array(Schema.String).annotations({ description: "the first 100 of them" })
})

const Limit = Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000)))

export class SyncGroup extends HttpApiGroup.make("sync")
  .add(HttpApiEndpoint.post("manual", "/v1/stripe/sync/manual").setPayload(ManualSyncRequest).addSuccess(ManualSyncResult))
  .add(HttpApiEndpoint.get("status", "/v1/stripe/sync/status").addSuccess(SyncStatus))
  .add(
    HttpApiEndpoint.get("batches", "/v1/stripe/sync/batches")
      .setUrlParams(
        Schema.Struct({
          status: Schema.optional(Status),
          customer_id: Schema.optional(Schema.String),
          meter_id: Schema.optional(Schema.String),
          from: Schema.optional(Instant.annotations({ description: "RFC 3339: windows starting at or after" })),
          to: Schema.optional(Instant.annotations({ description: "RFC 3339: windows starting before" })),
          limit: Limit,
          cursor: Schema.optional(BatchCursor)
        })
      )
      .addSuccess(Schema.Struct({ batches: Schema.Array(SyncBatch), next_cursor: Schema.NullOr(BatchCursor) }))
  )
  .add(
    HttpApiEndpoint.post("retryBatches", "/v1/stripe/sync/batches/retry")
      .setPayload(BatchRetryRequest)
      .addSuccess(BatchRetryResult)
      .annotate(
        OpenApi.Description,
        "Re-queues failed batches after a fix (a mapping, a key, a Stripe meter), audited. Each keeps its identifier, so Stripe's identifier dedup (24 h) and the resend guard beyond it keep a resend from billing twice; the retry budget starts again."
      )
  )
  .add(
    HttpApiEndpoint.get("reconciliation", "/v1/stripe/sync/reconciliation")
      .setUrlParams(
        Schema.Struct({
          from: Instant.annotations({ description: "RFC 3339: hours starting at or after" }),
          to: Instant.annotations({ description: "RFC 3339: hours starting before" })
        })
      )
      .addSuccess(Reconciliation)
  )
  .middleware(Authentication) {}

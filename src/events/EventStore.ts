/**
 * The event store: where raw events and processed (billable) rows live. Two backends share this
 * interface and one test suite: PostgreSQL tables (PGlite embedded or a PostgreSQL server) and
 * ClickHouse. The sync pipeline only ever sees this Tag.
 *
 * Semantics every backend must hold:
 * - `insertEvents` is idempotent on (tenant, environment, event_id): the first stored copy wins,
 *   and the returned list holds only the event ids that were new.
 * - processed rows are counted once per (event_id, meter_id), using the first-ingested copy.
 * - `ingestedAt` is the instant a row became durable-to-be; the pipeline reads
 *   `ingestedAfter < ingested_at <= ingestedBefore`, which is how delta (late) batches are found.
 * - quantities are exact decimal strings (see domain/Decimal.ts), never JS numbers.
 */
import { Context, Data, Effect, Option, Stream } from "effect"
import type { TenantScope } from "../domain/Ids.js"

export type EventStatus = "processed" | "pending" | "error"

export interface StoredEvent {
  readonly tenantId: string
  readonly environmentId: string
  readonly eventId: string
  readonly eventName: string
  readonly externalCustomerId: string
  /** null while the customer does not exist yet */
  readonly customerId: string | null
  readonly timestamp: Date
  readonly ingestedAt: Date
  /** the raw `properties` object as JSON text (numbers kept as written) */
  readonly propertiesJson: string
  readonly status: EventStatus
  /** processing error visible on the event (e.g. "property tokens is not numeric") */
  readonly error: string | null
}

export interface ProcessedEvent {
  readonly tenantId: string
  readonly environmentId: string
  readonly eventId: string
  readonly customerId: string
  readonly meterId: string
  readonly eventName: string
  readonly timestamp: Date
  readonly ingestedAt: Date
  readonly qtyTotal: string
  readonly qtyBillable: string
}

/**
 * The `ingested_at` of a write: an instant taken before it (`At`), or — a PostgreSQL server's
 * one-statement write — the database clock read by the statement right after it takes the
 * watermark's advisory lock `key` shared, held until the statement commits (IngestWatermark).
 */
export type IngestStamp =
  | { readonly _tag: "At"; readonly at: Date }
  | { readonly _tag: "AfterSharedLock"; readonly key: number }

/** One batch for `ingestResolving`: events without customers yet, and their would-be processed rows. */
export interface ResolvingBatch {
  readonly scope: TenantScope
  readonly stamp: IngestStamp
  /** distinct event ids */
  readonly events: ReadonlyArray<{
    readonly eventId: string
    readonly eventName: string
    readonly externalCustomerId: string
    readonly timestamp: Date
    readonly propertiesJson: string
    /** the processing error if the customer exists (stored only then) */
    readonly error: string | null
  }>
  /** per event and matching meter, the quantity (total = billable at ingest); stored only with a customer */
  readonly processed: ReadonlyArray<{ readonly eventId: string; readonly meterId: string; readonly qty: string }>
}

export interface ResolvedEvent {
  readonly eventId: string
  /** null: no such customer yet, the event is pending */
  readonly customerId: string | null
}

/** One aggregated group: what becomes one Stripe meter event. */
export interface AggregateGroup {
  readonly customerId: string
  readonly meterId: string
  readonly eventName: string
  /** SUM(qty_billable) as an exact decimal string */
  readonly quantity: string
  /** COUNT(*) of processed rows */
  readonly eventCount: number
}

export interface AggregateQuery {
  readonly scope: TenantScope
  readonly windowStart: Date
  readonly windowEnd: Date
  /** exclusive lower bound on ingested_at (previous watermark); omitted = from the beginning */
  readonly ingestedAfter?: Date | undefined
  /** inclusive upper bound on ingested_at (this run's watermark) */
  readonly ingestedBefore: Date
  /** only these meters (the ones with an enabled mapping); empty = nothing */
  readonly meterIds: ReadonlyArray<string>
  /** groups per page, at most STRIPE_BATCH_SIZE_LIMIT */
  readonly pageSize: number
}

export interface LateWindowsQuery {
  readonly scope: TenantScope
  /** rows ingested strictly after this instant... */
  readonly ingestedAfter: Date
  /** ...and at or before this one */
  readonly ingestedBefore: Date
  readonly windowMinutes: number
  readonly meterIds: ReadonlyArray<string>
}

export interface EventQuery {
  readonly scope: TenantScope
  readonly externalCustomerId?: string | undefined
  readonly eventName?: string | undefined
  readonly from?: Date | undefined
  readonly to?: Date | undefined
  readonly limit: number
  /** the keyset returned by the previous page (its text form on the wire: http/Cursors.ts) */
  readonly cursor?: EventKeyset | undefined
}

/** Where a page of the newest-first listing ends: the last event's timestamp and event_id. */
export interface EventKeyset {
  readonly key: Date
  readonly id: string
}

export interface EventPage {
  readonly events: ReadonlyArray<StoredEvent>
  readonly nextCursor: EventKeyset | null
}

export class EventStoreError extends Data.TaggedError("EventStoreError")<{
  readonly backend: "postgres" | "clickhouse"
  readonly operation: string
  readonly cause: unknown
}> {
  override get message() {
    return `event store (${this.backend}) failed during ${this.operation}`
  }
}

export interface EventStoreShape {
  readonly backend: "postgres" | "clickhouse"
  /** Store raw events; returns the event ids that were not already stored. */
  readonly insertEvents: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<ReadonlyArray<string>, EventStoreError>
  /**
   * The whole ingest write of one tenant environment's batch in one statement, customers resolved
   * by the store: each event new to the store is stored with the customer whose external id it
   * names, or — no such customer yet — as pending (status `pending`, no error, a `pending_events`
   * row); the processed rows of an event stored now with a customer are stored with it. Returns
   * the events stored now (not already stored) with the customer id found (null = pending).
   * Relational stores only; the ingestor resolves customers itself for a store without it.
   */
  readonly ingestResolving?: (batch: ResolvingBatch) => Effect.Effect<ReadonlyArray<ResolvedEvent>, EventStoreError>
  /** Store processed rows (idempotent on tenant, env, event_id, meter_id). */
  readonly insertProcessed: (rows: ReadonlyArray<ProcessedEvent>) => Effect.Effect<void, EventStoreError>
  /** Record the outcome of processing pending events (status, customer id, error). */
  readonly updateEventStatus: (
    scope: TenantScope,
    updates: ReadonlyArray<{ readonly eventId: string; readonly customerId: string | null; readonly status: EventStatus; readonly error: string | null }>
  ) => Effect.Effect<void, EventStoreError>
  /** SUM/COUNT per (customer, meter, event_name) for one window, streamed in pages. */
  readonly aggregateBillable: (query: AggregateQuery) => Stream.Stream<AggregateGroup, EventStoreError>
  /** Starts of windows (aligned to windowMinutes, UTC) holding rows ingested in (after, before]. */
  readonly windowsWithLateRows: (query: LateWindowsQuery) => Effect.Effect<ReadonlyArray<Date>, EventStoreError>
  /** Earliest event timestamp among processed rows of these meters. */
  readonly earliestProcessed: (scope: TenantScope, meterIds: ReadonlyArray<string>) => Effect.Effect<Option.Option<Date>, EventStoreError>
  readonly listEvents: (query: EventQuery) => Effect.Effect<EventPage, EventStoreError>
  /** Which of these external customer ids have at least one stored event (any status), in one pass. */
  readonly customersWithEvents: (scope: TenantScope, externalCustomerIds: ReadonlyArray<string>) => Effect.Effect<ReadonlySet<string>, EventStoreError>
  /** Reachability check for /readyz. */
  readonly ping: () => Effect.Effect<void, EventStoreError>
}

export class EventStore extends Context.Tag("flexprice/EventStore")<EventStore, EventStoreShape>() {}

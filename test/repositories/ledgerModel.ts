/**
 * Generated ledgers and what the ledger's statements (src/repositories/ledger/*.ts) must answer
 * for them, computed here from the generated rows alone (quantities with the BigInt oracle,
 * test/support/oracle.ts) — never from the repository. Shared by the statement-level ledger tests
 * (ledger-*.test.ts), which run each statement on a migrated PGlite and compare; fast enough for
 * the mutation run (vitest.mutation-ledger.config.ts, `npm run mutate:ledger`).
 *
 * Rows are seeded with plain SQL as the table owner, not through the repository, so a broken write
 * statement cannot hide in the setup of the reads' tests. Windows are 15 minutes and straddle a
 * month boundary (the ledger is partitioned by month, and the marks prune by the keys' window range);
 * ids are fixed-length lower-case hex so byte order and collation order agree.
 */
import type { PgClient } from "@effect/sql-pg"
import { Effect, Logger, LogLevel } from "effect"
import fc from "fast-check"
import { asOwner, inTenant } from "../../src/db/RowSecurity.js"
import { newId, TenantScope } from "../../src/domain/Ids.js"
import type { BatchRow, SkipReason, SyncStatus } from "../../src/repositories/ledger/Model.js"
import { makeProgress } from "../../src/repositories/ledger/Progress.js"
import { makeQueue } from "../../src/repositories/ledger/Queue.js"
import { makeReports } from "../../src/repositories/ledger/Reports.js"
import { quantity } from "../support/arbitraries.js"
import * as O from "../support/oracle.js"
import type { CurrentTenant } from "../../src/domain/Tenant.js"

export const PROPERTY_TIMEOUT = 240_000
export const MINUTE = 60_000
export const WINDOW_MS = 15 * MINUTE
/** Window starts: the last hour of February and the first two of March (two monthly partitions). */
export const WINDOWS = [
  "2025-02-28T23:00:00.000Z",
  "2025-02-28T23:15:00.000Z",
  "2025-02-28T23:45:00.000Z",
  "2025-03-01T00:00:00.000Z",
  "2025-03-01T00:30:00.000Z",
  "2025-03-01T01:15:00.000Z"
].map((s) => new Date(s))
export const CUSTOMERS = ["cus_a", "cus_b", "cus_c"] as const
export const METERS = ["mtr_a", "mtr_b", "mtr_c"] as const
export const EVENT_TYPES = ["api_call", "b"] as const
export const STATUSES: ReadonlyArray<SyncStatus> = ["pending", "sending", "synced", "failed", "skipped"]
export const SKIP_REASONS: ReadonlyArray<SkipReason | null> = [null, "no_mapping", "mapping_deleted", "too_late", "zero_quantity"]
export const ERROR_CODES = [null, "needs_review", "rate_limited", "resource_missing"] as const
/** Seeded rows' created/updated stamps and the watermark; `NOW` is what the writes under test stamp. */
export const T_CREATED = new Date("2025-03-01T02:00:00.000Z")
export const T_UPDATED = new Date("2025-03-01T03:00:00.000Z")
export const WATERMARK = new Date("2025-03-01T01:59:00.000Z")
export const NOW = new Date("2025-03-01T04:00:00.000Z")

export const freshScope = () => new TenantScope({ tenantId: newId.tenant(), environmentId: newId.environment() })

export const ms = (d: Date | null): number | null => (d === null ? null : new Date(d).getTime())

/** A ledger row as seeded and as the oracle tracks it (BatchRow plus what the reads do not return). */
export interface Seed extends BatchRow {
  readonly stripeErrorEventId: string | null
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, "0")
let nextLedgerTag = 0

const seedSpec = fc.record({
  idKey: fc.integer({ min: 0, max: 0xffffff }),
  customer: fc.nat(CUSTOMERS.length - 1),
  meter: fc.nat(METERS.length - 1),
  eventType: fc.nat(EVENT_TYPES.length - 1),
  window: fc.nat(WINDOWS.length - 1),
  sequence: fc.integer({ min: 1, max: 3 }),
  aggregated: quantity(),
  sent: fc.option(quantity(), { nil: null, freq: 3 }),
  eventCount: fc.nat(1_000_000),
  providerMeterId: fc.option(fc.constantFrom("mtr_stripe_1", "mtr_stripe_2"), { nil: null }),
  status: fc.constantFrom(...STATUSES),
  skipReason: fc.constantFrom(...SKIP_REASONS),
  retryCount: fc.nat(3),
  errorCode: fc.constantFrom(...ERROR_CODES),
  held: fc.boolean(),
  ingestedAfter: fc.option(fc.integer({ min: 0, max: 3600 }), { nil: null }),
  firstSent: fc.option(fc.integer({ min: 0, max: 7200 }), { nil: null }),
  // synced_at − window_end in seconds
  syncLag: fc.option(fc.integer({ min: 0, max: 7200 }), { nil: null }),
  updated: fc.integer({ min: -3600, max: 3600 })
})

type SeedSpec = typeof seedSpec extends fc.Arbitrary<infer T> ? T : never

/** The row a spec stands for (the `i`th of its ledger, whose ids and identifiers start with `tag`). */
const seedOf = (s: SeedSpec, i: number, tag: string): Seed => {
  const windowStart = WINDOWS[s.window]!
  const windowEnd = new Date(windowStart.getTime() + WINDOW_MS)
  return {
    id: `ssb_${tag}${hex(s.idKey, 6)}${hex(i, 2)}`,
    customerId: CUSTOMERS[s.customer]!,
    meterId: METERS[s.meter]!,
    eventType: EVENT_TYPES[s.eventType]!,
    windowStart,
    windowEnd,
    sequence: s.sequence,
    aggregatedQuantity: s.aggregated,
    sentQuantity: s.sent,
    eventCount: s.eventCount,
    identifier: `idf_${tag}${hex(s.idKey, 6)}_${i}`,
    providerMeterId: s.providerMeterId,
    syncStatus: s.status,
    skipReason: s.skipReason,
    retryCount: s.retryCount,
    errorCode: s.errorCode,
    errorMessage: s.errorCode === null ? null : `message of ${s.errorCode}`,
    ingestedAfter: s.ingestedAfter === null ? null : new Date(T_CREATED.getTime() - s.ingestedAfter * 1000),
    watermark: WATERMARK,
    firstSentAt: s.firstSent === null ? null : new Date(windowEnd.getTime() + s.firstSent * 1000),
    createdAt: new Date(T_CREATED.getTime() + i),
    updatedAt: new Date(T_UPDATED.getTime() + s.updated * 1000),
    syncedAt: s.syncLag === null ? null : new Date(windowEnd.getTime() + s.syncLag * 1000),
    stripeErrorEventId: s.held ? `evt_report_${i}` : null
  }
}

/** A generated ledger of one tenant environment: unique (customer, meter, event type, window, sequence). */
export const ledgerArb = (maxLength = 12): fc.Arbitrary<ReadonlyArray<Seed>> =>
  fc
    .uniqueArray(seedSpec, {
      minLength: 1,
      maxLength,
      selector: (s) => `${s.customer}|${s.meter}|${s.eventType}|${s.window}|${s.sequence}`
    })
    .map((specs) => {
      // Every generated ledger gets its own id prefix: the ledger table's key is (id, window_start)
      // across all tenants, and the properties of one file share a database, so two ledgers whose
      // `idKey`s fast-check biased to the same small value would otherwise collide on insert.
      const tag = hex(nextLedgerTag++, 8)
      return specs.map((s, i) => seedOf(s, i, tag))
    })

const spec = (s: ExampleSpec): SeedSpec => ({
  eventType: 0,
  sequence: 1,
  aggregated: "1",
  sent: null,
  eventCount: 1,
  providerMeterId: "mtr_stripe_1",
  skipReason: null,
  retryCount: 0,
  errorCode: null,
  held: false,
  ingestedAfter: null,
  firstSent: null,
  syncLag: null,
  updated: 0,
  ...s
})

/**
 * A fixed ledger, the first case of the properties that read one (fast-check `examples`). The
 * mutation run checks 5 cases per property (FC_MAX_RUNS) and fast-check's first cases are its
 * smallest (one batch, empty subsets), so in all 5 a read could answer nothing and a mutant that
 * empties it survive — six of Progress.ts's survivors of 2026-12-02 were that. This one has every
 * status in both months, several sendable batches per window, send amounts that differ from the
 * aggregate (20 integer digits, 12 decimals), a held failure and a `needs_review` one, first-send
 * and synced stamps on both sides of the reads' bounds. Ids are not in window order. Each call has
 * an id prefix of its own, as each generated ledger (see `ledgerArb`).
 */
export const exampleLedger = (more: ReadonlyArray<ExampleSpec> = []): ReadonlyArray<Seed> => {
  const tag = hex(nextLedgerTag++, 8)
  return [...EXAMPLE_SPECS, ...more.map(spec)].map((s, i) => seedOf(s, i, tag))
}
/** A row to add to the fixed ledger: what differs from a plain pending batch of one unit. */
export type ExampleSpec = Partial<SeedSpec> & Pick<SeedSpec, "idKey" | "customer" | "meter" | "window" | "status">
const EXAMPLE_SPECS: ReadonlyArray<SeedSpec> = [
  spec({ idKey: 0x9f0001, customer: 0, meter: 0, window: 0, status: "pending", aggregated: "10.5", sent: "10", ingestedAfter: 600, updated: -1200 }),
  spec({ idKey: 0x100002, customer: 0, meter: 0, window: 3, status: "synced", aggregated: "-3", sent: "-3", syncLag: 120, firstSent: 60, updated: 1800 }),
  spec({ idKey: 0x5a0003, customer: 1, meter: 1, eventType: 1, window: 1, sequence: 2, status: "skipped", skipReason: "no_mapping", aggregated: "7", providerMeterId: null, updated: 600 }),
  spec({ idKey: 0x0b0004, customer: 1, meter: 2, window: 4, status: "failed", aggregated: "0.000000000001", sent: "0", retryCount: 1, errorCode: "rate_limited", firstSent: 30, updated: 2400 }),
  spec({ idKey: 0xc00005, customer: 2, meter: 0, window: 2, status: "failed", aggregated: "100", sent: "99.5", errorCode: "needs_review", updated: -600 }),
  spec({ idKey: 0x330006, customer: 2, meter: 1, eventType: 1, window: 5, sequence: 3, status: "sending", aggregated: "5", sent: "5", firstSent: 90, updated: 3000 }),
  spec({ idKey: 0x770007, customer: 0, meter: 2, eventType: 1, window: 3, status: "failed", aggregated: "12345678901234567890.123456789012", sent: "12345678901234567890", retryCount: 2, errorCode: "resource_missing", held: true, updated: 1200 }),
  spec({ idKey: 0x010008, customer: 1, meter: 0, window: 0, sequence: 2, status: "skipped", skipReason: "mapping_deleted", aggregated: "2", updated: -2400 }),
  spec({ idKey: 0xee0009, customer: 2, meter: 2, window: 1, status: "synced", aggregated: "-0.25", sent: "-0.5", syncLag: 3600, firstSent: 0, updated: 300 }),
  spec({ idKey: 0x44000a, customer: 0, meter: 1, window: 4, status: "pending", aggregated: "8", sent: "8", firstSent: 7200, updated: -300 }),
  spec({ idKey: 0x22000b, customer: 1, meter: 1, window: 3, status: "sending", aggregated: "4.75", sent: "4", updated: 0 }),
  spec({ idKey: 0xaa000c, customer: 2, meter: 0, window: 5, status: "skipped", skipReason: "too_late", aggregated: "6", updated: 900 })
]

/** What the reads return for a seeded row: the BatchRow fields only, quantities canonical. */
export const asRow = (s: Seed): BatchRow => {
  const { stripeErrorEventId: _, ...row } = s
  return {
    ...row,
    aggregatedQuantity: O.format(s.aggregatedQuantity),
    sentQuantity: s.sentQuantity === null ? null : O.format(s.sentQuantity)
  }
}

/** (window_start, id) ascending, as JS compares them (ids are fixed-length hex). */
export const byWindowThenId = (a: Seed, b: Seed) =>
  a.windowStart.getTime() - b.windowStart.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
export const byId = (a: { readonly id: string }, b: { readonly id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

const iso = (d: Date | null) => (d === null ? null : d.toISOString())

export const makeHarness = (sql: PgClient.PgClient) => {
  const repo = { ...makeProgress(sql), ...makeQueue(sql), ...makeReports(sql) }
  const owner = asOwner("test: seeds and inspects the ledger")

  const seed = (scope: TenantScope, rows: ReadonlyArray<Seed>) =>
    sql`INSERT INTO stripe_sync_batches (id, tenant_id, environment_id, customer_id, meter_id, event_type, window_start,
        window_end, sequence, aggregated_quantity, sent_quantity, event_count, identifier, provider_meter_id, sync_status,
        skip_reason, retry_count, error_code, error_message, ingested_after, watermark, first_sent_at, created_at,
        updated_at, synced_at, stripe_error_event_id)
      SELECT r.id, ${scope.tenantId}, ${scope.environmentId}, r.customer_id, r.meter_id, r.event_type, r.window_start,
        r.window_end, r.sequence, r.aggregated_quantity, r.sent_quantity, r.event_count, r.identifier, r.provider_meter_id,
        r.sync_status, r.skip_reason, r.retry_count, r.error_code, r.error_message, r.ingested_after, r.watermark,
        r.first_sent_at, r.created_at, r.updated_at, r.synced_at, r.stripe_error_event_id
      FROM jsonb_to_recordset(${JSON.stringify(
        rows.map((s) => ({
          id: s.id,
          customer_id: s.customerId,
          meter_id: s.meterId,
          event_type: s.eventType,
          window_start: iso(s.windowStart),
          window_end: iso(s.windowEnd),
          sequence: s.sequence,
          aggregated_quantity: s.aggregatedQuantity,
          sent_quantity: s.sentQuantity,
          event_count: s.eventCount,
          identifier: s.identifier,
          provider_meter_id: s.providerMeterId,
          sync_status: s.syncStatus,
          skip_reason: s.skipReason,
          retry_count: s.retryCount,
          error_code: s.errorCode,
          error_message: s.errorMessage,
          ingested_after: iso(s.ingestedAfter),
          watermark: iso(s.watermark),
          first_sent_at: iso(s.firstSentAt),
          created_at: iso(s.createdAt),
          updated_at: iso(s.updatedAt),
          synced_at: iso(s.syncedAt),
          stripe_error_event_id: s.stripeErrorEventId
        }))
      )}::jsonb) AS r(id text, customer_id text, meter_id text, event_type text, window_start timestamptz,
        window_end timestamptz, sequence integer, aggregated_quantity numeric, sent_quantity numeric, event_count bigint,
        identifier text, provider_meter_id text, sync_status text, skip_reason text, retry_count integer, error_code text,
        error_message text, ingested_after timestamptz, watermark timestamptz, first_sent_at timestamptz,
        created_at timestamptz, updated_at timestamptz, synced_at timestamptz, stripe_error_event_id text)`.pipe(Effect.asVoid, owner)

  /** Every row of the scope as stored, in the Seed shape (quantities canonical), by id. */
  const stored = (scope: TenantScope) =>
    sql<{
      id: string
      customerId: string
      meterId: string
      eventType: string
      windowStart: Date
      windowEnd: Date
      sequence: number
      aggregatedQuantity: string
      sentQuantity: string | null
      eventCount: string
      identifier: string
      providerMeterId: string | null
      syncStatus: SyncStatus
      skipReason: SkipReason | null
      retryCount: number
      errorCode: string | null
      errorMessage: string | null
      ingestedAfter: Date | null
      watermark: Date
      firstSentAt: Date | null
      createdAt: Date
      updatedAt: Date
      syncedAt: Date | null
      stripeErrorEventId: string | null
    }>`SELECT id, customer_id, meter_id, event_type, window_start, window_end, sequence,
        aggregated_quantity::text AS aggregated_quantity, sent_quantity::text AS sent_quantity, event_count, identifier,
        provider_meter_id, sync_status, skip_reason, retry_count, error_code, error_message, ingested_after, watermark,
        first_sent_at, created_at, updated_at, synced_at, stripe_error_event_id
      FROM stripe_sync_batches WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
      ORDER BY id`.pipe(
      owner,
      Effect.map((rows) =>
        rows.map(
          (r): Seed => ({
            ...r,
            aggregatedQuantity: O.format(r.aggregatedQuantity),
            sentQuantity: r.sentQuantity === null ? null : O.format(r.sentQuantity),
            eventCount: Number(r.eventCount)
          })
        )
      )
    )

  /** Archived pairs (`stripe_sync_ledger_pairs`), as the archive job writes them. */
  const seedPairs = (
    scope: TenantScope,
    pairs: ReadonlyArray<{ readonly customerId: string; readonly meterId: string; readonly carry: string; readonly synced: number; readonly skipped: number }>
  ) =>
    pairs.length === 0
      ? Effect.void
      : sql`INSERT INTO stripe_sync_ledger_pairs (tenant_id, environment_id, customer_id, meter_id, carry, synced_batches, skipped_batches)
          SELECT ${scope.tenantId}, ${scope.environmentId}, r.customer_id, r.meter_id, r.carry, r.synced, r.skipped
          FROM jsonb_to_recordset(${JSON.stringify(
            pairs.map((p) => ({ customer_id: p.customerId, meter_id: p.meterId, carry: p.carry, synced: p.synced, skipped: p.skipped }))
          )}::jsonb) AS r(customer_id text, meter_id text, carry numeric, synced bigint, skipped bigint)`.pipe(Effect.asVoid, owner)

  /** Archived hours (`stripe_sync_ledger_archive`). */
  const seedArchive = (
    scope: TenantScope,
    hours: ReadonlyArray<{ readonly customerId: string; readonly meterId: string; readonly hour: Date; readonly total: string; readonly absTotal: string; readonly batches: number }>
  ) =>
    hours.length === 0
      ? Effect.void
      : sql`INSERT INTO stripe_sync_ledger_archive (tenant_id, environment_id, customer_id, meter_id, hour, synced_total, synced_abs_total, synced_batches)
          SELECT ${scope.tenantId}, ${scope.environmentId}, r.customer_id, r.meter_id, r.hour, r.total, r.abs_total, r.batches
          FROM jsonb_to_recordset(${JSON.stringify(
            hours.map((h) => ({ customer_id: h.customerId, meter_id: h.meterId, hour: h.hour.toISOString(), total: h.total, abs_total: h.absTotal, batches: h.batches }))
          )}::jsonb) AS r(customer_id text, meter_id text, hour timestamptz, total numeric, abs_total numeric, batches bigint)`.pipe(Effect.asVoid, owner)

  return { repo, seed, stored, seedPairs, seedArchive, owner }
}

/** Runs a generated case's effect with the file's database, inside `scope`'s tenant environment. */
export const runnerFor = Effect.map(Effect.context<PgClient.PgClient>(), (ctx) => <A, E>(e: Effect.Effect<A, E, PgClient.PgClient | CurrentTenant>, scope: TenantScope) =>
  Effect.runPromise(e.pipe(inTenant(scope), Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.Error)))
)

/**
 * Deduplication of processed rows at ingest on ClickHouse: a processed row is written only if its
 * (tenant, environment, event_id, meter_id) has not been counted yet, wherever in time the earlier
 * copy lies. Reads can then aggregate plainly (see `Aggregate.ts`).
 *
 * The check cannot use `events_processed` (sorted by time: a resend with another timestamp is in
 * another hour, and finding it means scanning the tenant). It uses `processed_keys`, sorted by
 * (event_id, meter_id), where each counted row has a CLAIM carrying the timestamp it was written at.
 *
 * Protocol, per (tenant, environment), with check and writes serialised (see `ScopeLocks` below
 * for one process; across processes the ingestor holds a per-tenant PostgreSQL advisory lock,
 * see EventIngestor):
 *   1. read the claims of the batch's (event, meter) pairs;
 *   2. pairs without a claim are new (unless their event is already stored at another instant:
 *      then the row is a later copy's and the first copy, still pending, will write its own):
 *      write their claims, THEN their arrivals, THEN their rows;
 *   3. pairs with a claim: look for the row at the claim's timestamp (an indexed lookup: the time
 *      is known). Found → a duplicate, dropped. Not found → the claim's writer died between its
 *      two inserts: write this copy's row AT THE CLAIM'S TIMESTAMP (its own quantity, today's
 *      ingestion stamp; its arrival first), leaving the claim as it is.
 *
 * Why exactly once, given that ClickHouse inserts are not transactional:
 * - A claim never loses an event. Claims are written before rows so that a crash can only leave a
 *   claim without rows, never rows without a claim (rows without a claim would be invisible to the
 *   check, and a resend with another timestamp would be counted a second time in another hour).
 *   A claim without rows is not trusted: step 3 repairs it with the next copy. That next copy
 *   comes, because the API acknowledges (202) only after every write, so the client retries, and
 *   the pending-event path keeps its PostgreSQL row until its writes are done.
 * - Nothing is counted twice. A row is written only when no row exists for the pair, under the
 *   per-tenant lock. The only way left to get a second row is an insert that the writer saw fail
 *   but the server applied later; the repair writes at the claim's timestamp, so both copies sit in
 *   the same window with the same sort key: the read audit sees the duplicate and takes the exact
 *   path (first-ingested copy), and merges collapse the pair to that same copy.
 * - Delta reads stay right. A repaired row carries this write's ingestion stamp, which the
 *   ingestion watermark has not passed, so the next run finds it as a late row of its window.
 * - Late-window reads miss no row. Every row written has an ARRIVAL (`processed_arrivals`, sorted
 *   by ingestion time), written before the row: a crash in between leaves an arrival without a
 *   row (its window is planned once for nothing, harmless), never a row without an arrival (its
 *   window would not be planned, and the next copy finds the row and writes nothing).
 *
 * The earliest copy's timestamp wins: the claim is written by the first copy to reach the lock.
 */
import { Effect } from "effect"
import type { TenantScope } from "../../domain/Ids.js"
import type { EventStoreError, ProcessedEvent } from "../EventStore.js"
import type { ChClient, Row } from "./Client.js"
import { epochMs, join, sql, tsvDateTime, tsvDecimal, tsvLine, tsvString, tsvUInt, type Sql } from "./escape.js"

const SEQ = 2n ** 42n
/** Version of a freshly inserted copy: the earlier it was ingested, the higher. */
export const freshVersion = (ingestedAtMs: number): bigint => SEQ - 1n - BigInt(ingestedAtMs)
/** Version of a status update made from a row with version `v`. */
export const bumpVersion = (v: bigint): bigint => (v / SEQ + 1n) * SEQ + (v % SEQ)

/** Keeps IN lists well under 18.16's 256 KiB max_query_size. */
const MAX_IN_CHARS = 64_000
export const chunkIds = (ids: ReadonlyArray<string>): ReadonlyArray<ReadonlyArray<string>> => {
  const out: Array<Array<string>> = []
  let current: Array<string> = []
  let size = 0
  for (const id of ids) {
    if (current.length > 0 && size + id.length + 4 > MAX_IN_CHARS) {
      out.push(current)
      current = []
      size = 0
    }
    current.push(id)
    size += id.length + 4
  }
  if (current.length > 0) out.push(current)
  return out
}

export const text = (row: Row, key: string): string => {
  const v = row[key]
  if (typeof v === "string") return v
  if (typeof v === "number" || typeof v === "bigint") return String(v)
  throw new Error(`column ${key}: expected a string, got ${v === null ? "null" : typeof v}`)
}
export const int = (row: Row, key: string): number => {
  const n = Number(text(row, key))
  if (!Number.isSafeInteger(n)) throw new Error(`column ${key}: expected an integer, got ${text(row, key)}`)
  return n
}

export const scopeCond = (scope: TenantScope): Sql => sql`tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`

/**
 * One permit per (tenant, environment) in this process. Embedded mode is one process (SPEC §2),
 * so this alone serialises check + insert there. A semaphore per scope is kept for the store's
 * life: a few hundred bytes per tenant, and tenants are few.
 */
export const makeScopeLocks = () => {
  const locks = new Map<string, Effect.Semaphore>()
  return <A, E, R>(scope: { readonly tenantId: string; readonly environmentId: string }, effect: Effect.Effect<A, E, R>) =>
    Effect.suspend(() => {
      const key = JSON.stringify([scope.tenantId, scope.environmentId])
      let lock = locks.get(key)
      if (lock === undefined) {
        lock = Effect.unsafeMakeSemaphore(1)
        locks.set(key, lock)
      }
      return lock.withPermits(1)(effect)
    })
}

/** `events_processed`'s columns in the order `encodeProcessedRow` writes them. */
export const PROCESSED_COLUMNS = [
  "tenant_id",
  "environment_id",
  "event_id",
  "meter_id",
  "customer_id",
  "event_name",
  "timestamp",
  "timestamp_ms",
  "ingested_at_ms",
  "qty_total",
  "qty_billable",
  "version"
] as const

const CLAIM_COLUMNS = ["tenant_id", "environment_id", "event_id", "meter_id", "timestamp_ms", "ingested_at_ms", "version"] as const

/** One processed row as ingest writes it: `timestamp` is the whole-second floor of `timestamp_ms`. */
export const encodeProcessedRow = (r: ProcessedEvent): string =>
  tsvLine([
    tsvString(r.tenantId),
    tsvString(r.environmentId),
    tsvString(r.eventId),
    tsvString(r.meterId),
    tsvString(r.customerId),
    tsvString(r.eventName),
    tsvDateTime(r.timestamp),
    tsvUInt(epochMs(r.timestamp)),
    tsvUInt(epochMs(r.ingestedAt)),
    tsvDecimal(r.qtyTotal),
    tsvDecimal(r.qtyBillable),
    tsvUInt(freshVersion(epochMs(r.ingestedAt)))
  ])

const encodeClaim = (r: ProcessedEvent): string =>
  tsvLine([
    tsvString(r.tenantId),
    tsvString(r.environmentId),
    tsvString(r.eventId),
    tsvString(r.meterId),
    tsvUInt(epochMs(r.timestamp)),
    tsvUInt(epochMs(r.ingestedAt)),
    tsvUInt(freshVersion(epochMs(r.ingestedAt)))
  ])

const ARRIVAL_COLUMNS = ["tenant_id", "environment_id", "meter_id", "ingested_at_ms", "event_id", "timestamp_ms"] as const

const encodeArrival = (r: ProcessedEvent): string =>
  tsvLine([
    tsvString(r.tenantId),
    tsvString(r.environmentId),
    tsvString(r.meterId),
    tsvUInt(epochMs(r.ingestedAt)),
    tsvString(r.eventId),
    tsvUInt(epochMs(r.timestamp))
  ])

const pairKey = (eventId: string, meterId: string) => JSON.stringify([eventId, meterId])

/**
 * Writes the rows of one scope that are not counted yet (the caller holds the scope's lock).
 * `attempt` turns a throw of the pure encoding code into the store's error.
 */
export const insertFirstCopies = (
  ch: ChClient,
  scope: TenantScope,
  rows: ReadonlyArray<ProcessedEvent>,
  attempt: <A>(operation: string, f: () => A) => Effect.Effect<A, EventStoreError>
): Effect.Effect<void, EventStoreError> =>
  Effect.gen(function* () {
    const op = "insertProcessed"
    /** Arrivals, then rows (see the module header). */
    const writeRows = (written: ReadonlyArray<ProcessedEvent>) =>
      Effect.gen(function* () {
        const [arrivals, data] = yield* attempt(op, () => [written.map(encodeArrival).join(""), written.map(encodeProcessedRow).join("")] as const)
        yield* ch.insertTsv(op, "processed_arrivals", ARRIVAL_COLUMNS, arrivals)
        yield* ch.insertTsv(op, "events_processed", PROCESSED_COLUMNS, data)
      })
    const firstInBatch = new Map<string, ProcessedEvent>()
    for (const r of rows) if (!firstInBatch.has(pairKey(r.eventId, r.meterId))) firstInBatch.set(pairKey(r.eventId, r.meterId), r)
    const candidates = [...firstInBatch.values()]
    const eventIds = [...new Set(candidates.map((r) => r.eventId))]

    // 1. claims (argMax(version): the earliest-ingested claim, should a claim ever have been written twice)
    const claims = new Map<string, number>()
    for (const chunk of chunkIds(eventIds)) {
      const found = yield* ch.query(
        op,
        sql`SELECT event_id, meter_id, argMax(timestamp_ms, version) AS claimed_ms FROM processed_keys
            WHERE ${scopeCond(scope)} AND event_id IN ${chunk} GROUP BY event_id, meter_id`
      )
      yield* attempt(op, () => found.forEach((r) => claims.set(pairKey(text(r, "event_id"), text(r, "meter_id")), int(r, "claimed_ms"))))
    }
    const unclaimed = candidates.filter((r) => !claims.has(pairKey(r.eventId, r.meterId)))
    const claimed = candidates.filter((r) => claims.has(pairKey(r.eventId, r.meterId)))

    // An unclaimed row of an event already stored at ANOTHER instant belongs to a later copy of an
    // event whose first copy is still pending (its customer was unknown): that first copy's own
    // processing writes the rows at its instant, as the PostgreSQL ingestor (processed rows only
    // for new events) does.
    const storedAt = new Map<string, number>()
    for (const chunk of chunkIds([...new Set(unclaimed.map((r) => r.eventId))])) {
      const found = yield* ch.query(
        op,
        sql`SELECT event_id, argMax(timestamp_ms, version) AS first_ms FROM event_keys
            WHERE ${scopeCond(scope)} AND event_id IN ${chunk} GROUP BY event_id`
      )
      yield* attempt(op, () => found.forEach((r) => storedAt.set(text(r, "event_id"), int(r, "first_ms"))))
    }
    const fresh = unclaimed.filter((r) => {
      const at = storedAt.get(r.eventId)
      return at === undefined || at === epochMs(r.timestamp)
    })

    // 3. claimed pairs: is the row there, at the claimed instant?
    const repaired: Array<ProcessedEvent> = []
    if (claimed.length > 0) {
      const present = new Set<string>()
      const seconds = [...new Set(claimed.map((r) => Math.floor(claims.get(pairKey(r.eventId, r.meterId))! / 1000)))]
      const times = join(seconds.map((s) => sql`toDateTime(${s})`), ", ")
      for (const chunk of chunkIds([...new Set(claimed.map((r) => r.eventId))])) {
        const found = yield* ch.query(
          op,
          sql`SELECT DISTINCT event_id, meter_id, timestamp_ms FROM events_processed
              WHERE ${scopeCond(scope)} AND timestamp IN (${times}) AND event_id IN ${chunk}`
        )
        yield* attempt(op, () => found.forEach((r) => present.add(JSON.stringify([text(r, "event_id"), text(r, "meter_id"), int(r, "timestamp_ms")]))))
      }
      for (const r of claimed) {
        const at = claims.get(pairKey(r.eventId, r.meterId))!
        if (!present.has(JSON.stringify([r.eventId, r.meterId, at]))) repaired.push({ ...r, timestamp: new Date(at) })
      }
    }

    // 2. new pairs: claims first, then arrivals and rows (see the module header)
    if (fresh.length > 0) {
      const claimData = yield* attempt(op, () => fresh.map(encodeClaim).join(""))
      yield* ch.insertTsv(op, "processed_keys", CLAIM_COLUMNS, claimData)
      yield* writeRows(fresh)
    }
    if (repaired.length > 0) {
      yield* Effect.logWarning("processed rows repaired at their claimed instant (a writer died between claim and rows)").pipe(
        Effect.annotateLogs({ tenant_id: scope.tenantId, rows: repaired.length })
      )
      yield* writeRows(repaired)
    }
  })

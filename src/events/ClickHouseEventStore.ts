/**
 * EventStore on ClickHouse (tables in migrations/clickhouse). Written for Debian's 18.16 and
 * current releases alike (SPEC §13): values are inlined through `clickhouse/escape.ts` only,
 * results are JSONEachRow with decimals selected as `toString(...)`, inserts are TabSeparated,
 * and instants are `DateTime` seconds (sort key, partitions) plus exact epoch-ms `UInt64` columns
 * because 18.16 has no DateTime64.
 *
 * Deduplication: ReplacingMergeTree merges are eventual and two racing inserts can both pass the
 * pre-insert check, so every read deduplicates too:
 * - events: one row per event_id, the one with the highest `version`; a fresh copy's version is
 *   2^42 - 1 - ingested_at_ms (earliest copy wins), each status update adds 2^42.
 * - events_processed: per (event_id, meter_id) the first-ingested copy (min ingested_at_ms,
 *   argMin of the other columns); its version rule makes merges keep that same copy.
 *
 * listEvents orders newest first by (timestamp, event_id) and filters `from <= timestamp < to`;
 * its cursor is the base64url JSON of the last (timestamp ms, event_id) returned.
 */
import { Chunk, Config, ConfigError, Effect, Layer, Option, Scope, Stream } from "effect"
import { normalize } from "../domain/Decimal.js"
import type { TenantScope } from "../domain/Ids.js"
import {
  EventStore,
  EventStoreError,
  type AggregateGroup,
  type AggregateQuery,
  type EventPage,
  type EventQuery,
  type EventStatus,
  type EventStoreShape,
  type LateWindowsQuery,
  type ProcessedEvent,
  type StoredEvent
} from "./EventStore.js"
import { makeClient, resolveConnection, type ChClient, type ClickHouseSettings, type Row } from "./clickhouse/Client.js"
import { ClickHouseMigrator } from "./clickhouse/Migrator.js"
import {
  dateTimeFloor,
  epochMs,
  join,
  Sql,
  sql,
  tsvDateTime,
  tsvDecimal,
  tsvLine,
  tsvString,
  tsvUInt
} from "./clickhouse/escape.js"

export type { ClickHouseSettings } from "./clickhouse/Client.js"

const SEQ = 2n ** 42n
/** Version of a freshly inserted copy: the earlier it was ingested, the higher. */
const freshVersion = (ingestedAtMs: number): bigint => SEQ - 1n - BigInt(ingestedAtMs)
/** Version of a status update made from a row with version `v`. */
const bumpVersion = (v: bigint): bigint => (v / SEQ + 1n) * SEQ + (v % SEQ)

/** Keeps IN lists well under 18.16's 256 KiB max_query_size. */
const MAX_IN_CHARS = 64_000
const chunkIds = (ids: ReadonlyArray<string>): ReadonlyArray<ReadonlyArray<string>> => {
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

const STATUSES: ReadonlyArray<EventStatus> = ["processed", "pending", "error"]

const fail = (operation: string, cause: unknown) => new EventStoreError({ backend: "clickhouse", operation, cause })

/** Runs pure encoding/validation code, turning a throw into EventStoreError. */
const attempt = <A>(operation: string, f: () => A): Effect.Effect<A, EventStoreError> =>
  Effect.try({ try: f, catch: (cause) => fail(operation, cause) })

// ---- row decoding (UInt64 arrives quoted in JSON; accept numbers too for other server settings) ----

const text = (row: Row, key: string): string => {
  const v = row[key]
  if (typeof v === "string") return v
  if (typeof v === "number" || typeof v === "bigint") return String(v)
  throw new Error(`column ${key}: expected a string, got ${v === null ? "null" : typeof v}`)
}
const int = (row: Row, key: string): number => {
  const n = Number(text(row, key))
  if (!Number.isSafeInteger(n)) throw new Error(`column ${key}: expected an integer, got ${text(row, key)}`)
  return n
}
const big = (row: Row, key: string): bigint => BigInt(text(row, key))

const scopeCond = (scope: TenantScope): Sql =>
  sql`tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}`

const groupBy = <A>(items: ReadonlyArray<A>, key: (a: A) => string): Map<string, Array<A>> => {
  const m = new Map<string, Array<A>>()
  for (const item of items) {
    const k = key(item)
    const list = m.get(k)
    if (list) list.push(item)
    else m.set(k, [item])
  }
  return m
}

const EVENT_COLUMNS = [
  "tenant_id",
  "environment_id",
  "event_id",
  "event_name",
  "external_customer_id",
  "customer_id",
  "timestamp",
  "timestamp_ms",
  "ingested_at_ms",
  "properties",
  "status",
  "error",
  "version"
] as const

const PROCESSED_COLUMNS = [
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

const KEY_COLUMNS = ["tenant_id", "environment_id", "event_id", "timestamp_ms", "ingested_at_ms", "version"] as const

const encodeEvent = (e: StoredEvent, version: bigint): string => {
  if (!STATUSES.includes(e.status)) throw new Error(`unknown event status ${JSON.stringify(e.status)}`)
  return tsvLine([
    tsvString(e.tenantId),
    tsvString(e.environmentId),
    tsvString(e.eventId),
    tsvString(e.eventName),
    tsvString(e.externalCustomerId),
    tsvString(e.customerId ?? ""),
    tsvDateTime(e.timestamp),
    tsvUInt(epochMs(e.timestamp)),
    tsvUInt(epochMs(e.ingestedAt)),
    tsvString(e.propertiesJson),
    tsvString(e.status),
    tsvString(e.error ?? ""),
    tsvUInt(version)
  ])
}

/** Selected from `events` (raw columns, so outer queries can filter and sort on them). */
const EVENT_SELECT = new Sql(
  "tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, timestamp, timestamp_ms, " +
    "ingested_at_ms, properties, status, error, version, toString(version) AS version_text"
)
const EVENT_OUTER = new Sql(
  "tenant_id, environment_id, event_id, event_name, external_customer_id, customer_id, timestamp_ms, ingested_at_ms, " +
    "properties, status, error, version_text"
)

const decodeEvent = (row: Row): StoredEvent & { readonly version: bigint } => {
  const status = text(row, "status")
  if (!STATUSES.includes(status as EventStatus)) throw new Error(`unknown event status ${JSON.stringify(status)}`)
  const customerId = text(row, "customer_id")
  const error = text(row, "error")
  return {
    tenantId: text(row, "tenant_id"),
    environmentId: text(row, "environment_id"),
    eventId: text(row, "event_id"),
    eventName: text(row, "event_name"),
    externalCustomerId: text(row, "external_customer_id"),
    customerId: customerId === "" ? null : customerId,
    timestamp: new Date(int(row, "timestamp_ms")),
    ingestedAt: new Date(int(row, "ingested_at_ms")),
    propertiesJson: text(row, "properties"),
    status: status as EventStatus,
    error: error === "" ? null : error,
    version: big(row, "version_text")
  }
}

const stripVersion = ({ version: _v, ...event }: StoredEvent & { readonly version: bigint }): StoredEvent => event

interface Cursor {
  readonly t: number
  readonly id: string
}
const encodeCursor = (c: Cursor): string => Buffer.from(JSON.stringify([c.t, c.id]), "utf8").toString("base64url")
const decodeCursor = (s: string): Cursor => {
  const parsed: unknown = JSON.parse(Buffer.from(s, "base64url").toString("utf8"))
  if (
    !Array.isArray(parsed) ||
    parsed.length !== 2 ||
    typeof parsed[0] !== "number" ||
    !Number.isSafeInteger(parsed[0]) ||
    typeof parsed[1] !== "string"
  ) {
    throw new Error("invalid cursor")
  }
  return { t: parsed[0], id: parsed[1] }
}

/** Builds the store over an already-migrated database. */
export const fromClient = (ch: ChClient): EventStoreShape => {
  /** Ids among `ids` already stored for this scope (through the id-sorted `event_keys`). */
  const storedIds = (operation: string, scope: TenantScope, ids: ReadonlyArray<string>) =>
    Effect.forEach(chunkIds(ids), (chunk) =>
      ch.query(
        operation,
        sql`SELECT DISTINCT event_id FROM event_keys WHERE ${scopeCond(scope)} AND event_id IN ${chunk}`
      )
    ).pipe(Effect.flatMap((pages) => attempt(operation, () => new Set(pages.flat().map((r) => text(r, "event_id"))))))

  const insertEvents = Effect.fn("EventStore.insertEvents")(function* (events: ReadonlyArray<StoredEvent>) {
    const created: Array<string> = []
    const byScope = groupBy(events, (e) => JSON.stringify([e.tenantId, e.environmentId]))
    for (const group of byScope.values()) {
      const scope = { tenantId: group[0]!.tenantId, environmentId: group[0]!.environmentId } as TenantScope
      const firstInBatch = new Map<string, StoredEvent>()
      for (const e of group) if (!firstInBatch.has(e.eventId)) firstInBatch.set(e.eventId, e)
      const existing = yield* storedIds("insertEvents", scope, [...firstInBatch.keys()])
      const fresh = [...firstInBatch.values()].filter((e) => !existing.has(e.eventId))
      if (fresh.length === 0) continue
      const [eventData, keyData] = yield* attempt("insertEvents", () => [
        fresh.map((e) => encodeEvent(e, freshVersion(epochMs(e.ingestedAt)))).join(""),
        fresh
          .map((e) =>
            tsvLine([
              tsvString(e.tenantId),
              tsvString(e.environmentId),
              tsvString(e.eventId),
              tsvUInt(epochMs(e.timestamp)),
              tsvUInt(epochMs(e.ingestedAt)),
              tsvUInt(freshVersion(epochMs(e.ingestedAt)))
            ])
          )
          .join("")
      ])
      // Events before keys: a crash in between leaves a stored event without a key (a resend then
      // stores a second copy, which reads ignore), never a key without its event (a lost event).
      yield* ch.insertTsv("insertEvents", "events", EVENT_COLUMNS, eventData)
      yield* ch.insertTsv("insertEvents", "event_keys", KEY_COLUMNS, keyData)
      for (const e of fresh) created.push(e.eventId)
    }
    return created as ReadonlyArray<string>
  })

  const insertProcessed = Effect.fn("EventStore.insertProcessed")(function* (rows: ReadonlyArray<ProcessedEvent>) {
    const byScope = groupBy(rows, (r) => JSON.stringify([r.tenantId, r.environmentId]))
    for (const group of byScope.values()) {
      const scope = { tenantId: group[0]!.tenantId, environmentId: group[0]!.environmentId } as TenantScope
      const keyOf = (eventId: string, meterId: string) => JSON.stringify([eventId, meterId])
      const firstInBatch = new Map<string, ProcessedEvent>()
      for (const r of group) if (!firstInBatch.has(keyOf(r.eventId, r.meterId))) firstInBatch.set(keyOf(r.eventId, r.meterId), r)
      const candidates = [...firstInBatch.values()]
      const [minMs, maxMs] = yield* attempt("insertProcessed", () => {
        const ts = candidates.map((r) => epochMs(r.timestamp))
        return [Math.min(...ts), Math.max(...ts)] as const
      })
      // Processed rows of one event always carry that event's timestamp: the range makes the check use the index.
      const existing = new Set<string>()
      for (const chunk of chunkIds([...new Set(candidates.map((r) => r.eventId))])) {
        const found = yield* ch.query(
          "insertProcessed",
          sql`SELECT DISTINCT event_id, meter_id FROM events_processed WHERE ${scopeCond(scope)}
              AND timestamp >= ${dateTimeFloor(new Date(minMs))} AND timestamp <= ${dateTimeFloor(new Date(maxMs))}
              AND event_id IN ${chunk}`
        )
        yield* attempt("insertProcessed", () => found.forEach((r) => existing.add(keyOf(text(r, "event_id"), text(r, "meter_id")))))
      }
      const fresh = candidates.filter((r) => !existing.has(keyOf(r.eventId, r.meterId)))
      if (fresh.length === 0) continue
      const data = yield* attempt("insertProcessed", () =>
        fresh
          .map((r) =>
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
          )
          .join("")
      )
      yield* ch.insertTsv("insertProcessed", "events_processed", PROCESSED_COLUMNS, data)
    }
  })

  const updateEventStatus = Effect.fn("EventStore.updateEventStatus")(function* (
    scope: TenantScope,
    updates: ReadonlyArray<{ readonly eventId: string; readonly customerId: string | null; readonly status: EventStatus; readonly error: string | null }>
  ) {
    if (updates.length === 0) return
    // The last update of an id in one call wins, as if applied in order.
    const latest = new Map(updates.map((u) => [u.eventId, u] as const))
    for (const u of latest.values()) {
      if (!STATUSES.includes(u.status)) return yield* fail("updateEventStatus", new Error(`unknown event status ${JSON.stringify(u.status)}`))
    }
    const ids = [...latest.keys()]
    const current: Array<StoredEvent & { readonly version: bigint }> = []
    for (const chunk of chunkIds(ids)) {
      const keys = yield* ch.query(
        "updateEventStatus",
        sql`SELECT min(timestamp_ms) AS lo, max(timestamp_ms) AS hi, uniqExact(event_id) AS n
            FROM event_keys WHERE ${scopeCond(scope)} AND event_id IN ${chunk}`
      )
      const [lo, hi, n] = yield* attempt("updateEventStatus", () => [int(keys[0]!, "lo"), int(keys[0]!, "hi"), int(keys[0]!, "n")] as const)
      if (n === 0) continue
      // The time range (from event_keys) lets the primary index find the rows; ids are unique per scope.
      const rows = yield* ch.query(
        "updateEventStatus",
        sql`SELECT ${EVENT_SELECT} FROM events
            WHERE ${scopeCond(scope)} AND timestamp >= ${dateTimeFloor(new Date(lo))} AND timestamp <= ${dateTimeFloor(new Date(hi))}
              AND event_id IN ${chunk}
            ORDER BY event_id, version DESC LIMIT 1 BY event_id`
      )
      current.push(...(yield* attempt("updateEventStatus", () => rows.map(decodeEvent))))
    }
    if (current.length === 0) return
    const data = yield* attempt("updateEventStatus", () =>
      current
        .map((row) => {
          const u = latest.get(row.eventId)!
          return encodeEvent(
            { ...stripVersion(row), customerId: u.customerId, status: u.status, error: u.error },
            bumpVersion(row.version)
          )
        })
        .join("")
    )
    yield* ch.insertTsv("updateEventStatus", "events", EVENT_COLUMNS, data)
  })

  const aggregateBillable = (query: AggregateQuery): Stream.Stream<AggregateGroup, EventStoreError> => {
    if (query.meterIds.length === 0) return Stream.empty
    type Key = readonly [string, string, string]
    const pageSize = query.pageSize
    const fetchPage = (after: Option.Option<Key>) =>
      Effect.gen(function* () {
        if (!Number.isSafeInteger(pageSize) || pageSize < 1) {
          return yield* fail("aggregateBillable", new Error(`pageSize must be a positive integer, got ${pageSize}`))
        }
        const q = yield* attempt("aggregateBillable", () => {
          const startMs = epochMs(query.windowStart)
          const endMs = epochMs(query.windowEnd)
          const beforeMs = epochMs(query.ingestedBefore)
          const lower = query.ingestedAfter ? sql` AND first_ingested > ${epochMs(query.ingestedAfter)}` : new Sql("")
          const keyset = Option.match(after, {
            onNone: () => new Sql(""),
            onSome: ([c, m, n]) => sql` HAVING c > ${c} OR (c = ${c} AND (m > ${m} OR (m = ${m} AND n > ${n})))`
          })
          // Inner: one row per (event_id, meter_id), the first-ingested copy. Aliases differ from
          // column names: old ClickHouse substitutes aliases inside aggregate arguments.
          return sql`SELECT c, m, n, toString(sum(qb)) AS quantity, count() AS event_count FROM (
              SELECT meter_id AS m, event_id AS e,
                     min(ingested_at_ms) AS first_ingested,
                     argMin(qty_billable, ingested_at_ms) AS qb,
                     argMin(customer_id, ingested_at_ms) AS c,
                     argMin(event_name, ingested_at_ms) AS n
              FROM events_processed
              WHERE ${scopeCond(query.scope)}
                AND timestamp >= ${dateTimeFloor(query.windowStart)} AND timestamp <= ${dateTimeFloor(query.windowEnd)}
                AND timestamp_ms >= ${startMs} AND timestamp_ms < ${endMs}
                AND meter_id IN ${query.meterIds}
              GROUP BY m, e
            )
            WHERE first_ingested <= ${beforeMs}${lower} AND qb > 0
            GROUP BY c, m, n${keyset}
            ORDER BY c, m, n
            LIMIT ${pageSize}`
        })
        const rows = yield* ch.query("aggregateBillable", q)
        const groups = yield* attempt("aggregateBillable", () =>
          rows.map(
            (r): AggregateGroup => ({
              customerId: text(r, "c"),
              meterId: text(r, "m"),
              eventName: text(r, "n"),
              quantity: normalize(text(r, "quantity")),
              eventCount: int(r, "event_count")
            })
          )
        )
        const last = groups[groups.length - 1]
        const next: Option.Option<Option.Option<Key>> =
          groups.length < pageSize || last === undefined ? Option.none() : Option.some(Option.some([last.customerId, last.meterId, last.eventName] as const))
        return [Chunk.fromIterable(groups), next] as const
      }).pipe(Effect.withSpan("EventStore.aggregateBillable.page"))
    return Stream.paginateChunkEffect(Option.none<Key>(), fetchPage)
  }

  const windowsWithLateRows = Effect.fn("EventStore.windowsWithLateRows")(function* (query: LateWindowsQuery) {
    if (query.meterIds.length === 0) return [] as ReadonlyArray<Date>
    const q = yield* attempt("windowsWithLateRows", () => {
      if (!Number.isSafeInteger(query.windowMinutes) || query.windowMinutes < 1) {
        throw new Error(`windowMinutes must be a positive integer, got ${query.windowMinutes}`)
      }
      const windowMs = query.windowMinutes * 60_000
      const afterMs = epochMs(query.ingestedAfter)
      const beforeMs = epochMs(query.ingestedBefore)
      // A row counts as late only if its first copy was ingested in the range (a re-sent copy is not new).
      return sql`SELECT DISTINCT intDiv(ts, ${windowMs}) * ${windowMs} AS window_start FROM (
          SELECT argMin(timestamp_ms, ingested_at_ms) AS ts, min(ingested_at_ms) AS first_ingested
          FROM events_processed
          WHERE ${scopeCond(query.scope)} AND meter_id IN ${query.meterIds}
            AND (event_id, meter_id) IN (
              SELECT event_id, meter_id FROM events_processed
              WHERE ${scopeCond(query.scope)} AND meter_id IN ${query.meterIds}
                AND ingested_at_ms > ${afterMs} AND ingested_at_ms <= ${beforeMs})
          GROUP BY event_id, meter_id
        )
        WHERE first_ingested > ${afterMs} AND first_ingested <= ${beforeMs}
        ORDER BY window_start`
    })
    const rows = yield* ch.query("windowsWithLateRows", q)
    return yield* attempt("windowsWithLateRows", () => rows.map((r) => new Date(int(r, "window_start"))))
  })

  const earliestProcessed = Effect.fn("EventStore.earliestProcessed")(function* (scope: TenantScope, meterIds: ReadonlyArray<string>) {
    if (meterIds.length === 0) return Option.none<Date>()
    const rows = yield* ch.query(
      "earliestProcessed",
      sql`SELECT min(timestamp_ms) AS earliest, count() AS n FROM events_processed
          WHERE ${scopeCond(scope)} AND meter_id IN ${meterIds}`
    )
    return yield* attempt("earliestProcessed", () =>
      rows.length === 0 || int(rows[0]!, "n") === 0 ? Option.none<Date>() : Option.some(new Date(int(rows[0]!, "earliest")))
    )
  })

  const listEvents = Effect.fn("EventStore.listEvents")(function* (query: EventQuery) {
    const q = yield* attempt("listEvents", () => {
      if (!Number.isSafeInteger(query.limit) || query.limit < 1 || query.limit > 10_000) {
        throw new Error(`limit must be an integer in 1..10000, got ${query.limit}`)
      }
      const cursor = query.cursor !== undefined ? decodeCursor(query.cursor) : undefined
      const inner: Array<Sql> = [scopeCond(query.scope)]
      if (query.externalCustomerId !== undefined) inner.push(sql`external_customer_id = ${query.externalCustomerId}`)
      if (query.eventName !== undefined) inner.push(sql`event_name = ${query.eventName}`)
      if (query.from !== undefined) {
        inner.push(sql`timestamp >= ${dateTimeFloor(query.from)} AND timestamp_ms >= ${epochMs(query.from)}`)
      }
      if (query.to !== undefined) inner.push(sql`timestamp <= ${dateTimeFloor(query.to)} AND timestamp_ms < ${epochMs(query.to)}`)
      if (cursor !== undefined) inner.push(sql`timestamp <= ${dateTimeFloor(new Date(cursor.t))} AND timestamp_ms <= ${cursor.t}`)
      const outer =
        cursor === undefined
          ? new Sql("")
          : sql`WHERE timestamp_ms < ${cursor.t} OR (timestamp_ms = ${cursor.t} AND event_id < ${cursor.id})`
      return sql`SELECT ${EVENT_OUTER} FROM (
          SELECT ${EVENT_SELECT} FROM events WHERE ${join(inner, " AND ")}
          ORDER BY event_id, version DESC LIMIT 1 BY event_id
        ) ${outer}
        ORDER BY timestamp_ms DESC, event_id DESC
        LIMIT ${query.limit + 1}`
    })
    const rows = yield* ch.query("listEvents", q)
    const events = yield* attempt("listEvents", () => rows.map(decodeEvent))
    const page = events.slice(0, query.limit)
    const last = page[page.length - 1]
    return {
      events: page.map(stripVersion),
      nextCursor: events.length > query.limit && last ? encodeCursor({ t: last.timestamp.getTime(), id: last.eventId }) : null
    } satisfies EventPage
  })

  return {
    backend: "clickhouse",
    insertEvents,
    insertProcessed,
    updateEventStatus,
    aggregateBillable,
    windowsWithLateRows,
    earliestProcessed,
    listEvents,
    ping: ch.ping("ping").pipe(Effect.withSpan("EventStore.ping"))
  }
}

export interface ClickHouseStoreOptions extends ClickHouseSettings {
  /** defaults to `migrations/clickhouse` found above this module */
  readonly migrationsDir?: string | undefined
}

/** Connects, creates the database, applies the migrations, and returns the store (closed with the scope). */
export const make = (options: ClickHouseStoreOptions): Effect.Effect<EventStoreShape, EventStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const connection = yield* attempt("connect", () => resolveConnection(options))
    const bootstrap = yield* makeClient(connection, "default")
    const client = yield* makeClient(connection)
    yield* ClickHouseMigrator({ bootstrap, client, dir: options.migrationsDir })
    return fromClient(client)
  }).pipe(Effect.withSpan("EventStore.clickhouse.make"))

/** The EventStore from explicit settings (tests, benchmarks). */
export const layerWith = (options: ClickHouseStoreOptions): Layer.Layer<EventStore, EventStoreError> =>
  Layer.scoped(EventStore, make(options))

/** Settings from `FLEXPRICE_CLICKHOUSE_URL` (required) and `FLEXPRICE_CLICKHOUSE_DATABASE` (optional, beats the URL path). */
export const settingsConfig: Config.Config<ClickHouseSettings> = Config.all({
  url: Config.redacted("FLEXPRICE_CLICKHOUSE_URL"),
  database: Config.string("FLEXPRICE_CLICKHOUSE_DATABASE").pipe(
    Config.option,
    Config.map((o) => Option.getOrUndefined(Option.filter(o, (s) => s.trim() !== "")))
  )
})

/** The EventStore configured from the environment. */
export const layer: Layer.Layer<EventStore, EventStoreError | ConfigError.ConfigError> = Layer.scoped(
  EventStore,
  Effect.flatMap(settingsConfig, (settings) => make(settings))
)

export const ClickHouseEventStore = { make, fromClient, layer, layerWith, settingsConfig } as const

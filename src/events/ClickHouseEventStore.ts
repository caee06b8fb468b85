/**
 * EventStore on ClickHouse (tables in migrations/clickhouse). Written for Debian's 18.16 and
 * current releases alike (SPEC §13): values are inlined through `clickhouse/escape.ts` only,
 * results are JSONEachRow with decimals selected as `toString(...)`, inserts are TabSeparated,
 * and instants are `DateTime` seconds (sort key, partitions) plus exact epoch-ms `UInt64` columns
 * because 18.16 has no DateTime64.
 *
 * Deduplication:
 * - processed rows are deduplicated AT INGEST, per (event_id, meter_id) whatever the copy's
 *   timestamp, against the id-sorted `processed_keys` (protocol and exactly-once argument in
 *   `clickhouse/FirstCopy.ts`); the window aggregate is a plain GROUP BY with an audit that falls
 *   back to the exact read-time deduplication if it ever finds a duplicate (`clickhouse/Aggregate.ts`).
 * - events: checked against the id-sorted `event_keys` before insert; reads still keep one row
 *   per event_id, the one with the highest `version` (a fresh copy's version is
 *   2^42 - 1 - ingested_at_ms, so the earliest copy wins; each status update adds 2^42).
 * Check and insert run under a per-(tenant, environment) lock in this process; across processes
 * the ingestor adds a PostgreSQL advisory lock per tenant (EventIngestor).
 *
 * listEvents orders newest first by (timestamp, event_id) and filters `from <= timestamp < to`;
 * its cursor is the base64url JSON of the last (timestamp ms, event_id) returned.
 */
import { Config, ConfigError, Effect, Layer, Option, Scope } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import {
  EventStore,
  EventStoreError,
  type EventPage,
  type EventQuery,
  type EventStatus,
  type EventStoreShape,
  type ProcessedEvent,
  type StoredEvent
} from "./EventStore.js"
import { makeClient, resolveConnection, type ChClient, type ClickHouseSettings, type Row } from "./clickhouse/Client.js"
import { makeAggregate } from "./clickhouse/Aggregate.js"
import { makeLateReads } from "./clickhouse/LateWindows.js"
import { bumpVersion, chunkIds, freshVersion, int, makeScopeLocks, insertFirstCopies, scopeCond, text } from "./clickhouse/FirstCopy.js"
import { ClickHouseMigrator } from "./clickhouse/Migrator.js"
import {
  dateTimeFloor,
  epochMs,
  join,
  Sql,
  sql,
  tsvDateTime,
  tsvLine,
  tsvString,
  tsvUInt
} from "./clickhouse/escape.js"

export type { ClickHouseSettings } from "./clickhouse/Client.js"

const STATUSES: ReadonlyArray<EventStatus> = ["processed", "pending", "error"]

const fail = (operation: string, cause: unknown) => new EventStoreError({ backend: "clickhouse", operation, cause })

/** Runs pure encoding/validation code, turning a throw into EventStoreError. */
const attempt = <A>(operation: string, f: () => A): Effect.Effect<A, EventStoreError> =>
  Effect.try({ try: f, catch: (cause) => fail(operation, cause) })

const big = (row: Row, key: string): bigint => BigInt(text(row, key))

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


/** Builds the store over an already-migrated database. */
export const fromClient = (ch: ChClient): EventStoreShape => {
  const serialised = makeScopeLocks()
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
      created.push(...(yield* serialised(scope, insertScopeEvents(scope, group))))
    }
    return created as ReadonlyArray<string>
  })

  /** Stores the events of one scope that are new (the caller holds the scope's lock). */
  const insertScopeEvents = (scope: TenantScope, group: ReadonlyArray<StoredEvent>) =>
    Effect.gen(function* () {
      const firstInBatch = new Map<string, StoredEvent>()
      for (const e of group) if (!firstInBatch.has(e.eventId)) firstInBatch.set(e.eventId, e)
      const existing = yield* storedIds("insertEvents", scope, [...firstInBatch.keys()])
      const fresh = [...firstInBatch.values()].filter((e) => !existing.has(e.eventId))
      if (fresh.length === 0) return [] as ReadonlyArray<string>
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
      return fresh.map((e) => e.eventId)
    })

  const insertProcessed = Effect.fn("EventStore.insertProcessed")(function* (rows: ReadonlyArray<ProcessedEvent>) {
    for (const group of groupBy(rows, (r) => JSON.stringify([r.tenantId, r.environmentId])).values()) {
      const scope = { tenantId: group[0]!.tenantId, environmentId: group[0]!.environmentId } as TenantScope
      yield* serialised(scope, insertFirstCopies(ch, scope, group, attempt))
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

  const { aggregateBillable } = makeAggregate(ch, attempt)

  const { windowsWithLateRows, earliestProcessed } = makeLateReads(ch, attempt)

  const listEvents = Effect.fn("EventStore.listEvents")(function* (query: EventQuery) {
    const q = yield* attempt("listEvents", () => {
      if (!Number.isSafeInteger(query.limit) || query.limit < 1 || query.limit > 10_000) {
        throw new Error(`limit must be an integer in 1..10000, got ${query.limit}`)
      }
      const cursor = query.cursor !== undefined ? { t: query.cursor.key.getTime(), id: query.cursor.id } : undefined
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
      nextCursor: events.length > query.limit && last ? { key: last.timestamp, id: last.eventId } : null
    } satisfies EventPage
  })

  const customersWithEvents = Effect.fn("EventStore.customersWithEvents")(function* (scope: TenantScope, externalCustomerIds: ReadonlyArray<string>) {
    const found = new Set<string>()
    for (const chunk of chunkIds(externalCustomerIds)) {
      const rows = yield* ch.query("customersWithEvents", sql`SELECT DISTINCT external_customer_id FROM events WHERE ${scopeCond(scope)} AND external_customer_id IN ${chunk}`)
      yield* attempt("customersWithEvents", () => rows.forEach((r) => found.add(text(r, "external_customer_id"))))
    }
    return found as ReadonlySet<string>
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
    customersWithEvents,
    ping: Effect.fn("EventStore.ping")(() => ch.ping("ping"))
  }
}

export interface ClickHouseStoreOptions extends ClickHouseSettings {
  /** defaults to `migrations/clickhouse` found above this module */
  readonly migrationsDir?: string | undefined
}

/** Connects, creates the database, applies the migrations, and returns the store (closed with the scope). */
export const make: (options: ClickHouseStoreOptions) => Effect.Effect<EventStoreShape, EventStoreError, Scope.Scope> = Effect.fn(
  "EventStore.clickhouse.make"
)(function* (options: ClickHouseStoreOptions) {
  const connection = yield* attempt("connect", () => resolveConnection(options))
  const bootstrap = yield* makeClient(connection, "default")
  const client = yield* makeClient(connection)
  yield* ClickHouseMigrator({ bootstrap, client, dir: options.migrationsDir })
  return fromClient(client)
})

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

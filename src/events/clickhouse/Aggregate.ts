/**
 * The window aggregate on ClickHouse. Processed rows are deduplicated at ingest (`FirstCopy.ts`),
 * so a window is read with a plain `GROUP BY` over its rows — no hash table of every event id,
 * which is what made the read-time deduplication several times slower than the engine's GROUP BY.
 *
 * The plain read is right only if the window holds one row per (event_id, meter_id). That is what
 * ingest guarantees, and an AUDIT checks it on every read: `count()` against
 * `uniqExact(cityHash64(event_id, meter_id))` over every row of the window for the read's meters
 * (all ingestion stamps, so a duplicate of a row counted by an earlier run is seen too). It runs
 * beside the first page. If it ever sees a duplicate — a racing writer outside the locks, an
 * insert that landed after its writer gave up, rows written by hand — the read takes the EXACT
 * path instead (per pair, the first-ingested copy, as before ingest deduplication existed), and
 * `flexprice_event_store_duplicate_reads_total` counts it, so an operator sees that something
 * wrote around the ingest check. A hash collision can only make the audit see a duplicate that is
 * not there, which costs time (the exact path), never a wrong total.
 *
 * The audit and the first page are two queries, each over its own snapshot of the table's parts,
 * sent together. The net has two known holes in the milliseconds between the snapshots: a copy
 * written around ingest in between is seen by one query only, and a background merge of
 * ReplacingMergeTree (which collapses copies with the same sort key) finishing in between can
 * hide from the audit a copy the page counted. Running the audit first and the page after would
 * close the second hole at the cost of the two queries' overlap (their separate costs: BENCHMARKS.md,
 * "can an exact check be cheap enough?"); left open, since the first hole stays whatever the order
 * and both need a writer that went around the ingest check.
 *
 * Both statements bound the window by the `DateTime` column alone when its ends are whole seconds
 * (the sync's windows are), which spares them reading `timestamp_ms` (see `windowCond`).
 *
 * The audit hashes the two strings as it reads them. A stored hash column (`MATERIALIZED
 * cityHash64(event_id, meter_id)`) was tried and not kept: it saved a few per cent of the read,
 * and current releases (chdb's 26.7) compute it WRONGLY for parts written before the column was
 * added when the read's filter on `meter_id` runs as PREWHERE (the hash of an empty meter id), so
 * the audit would miss duplicates in old windows (BENCHMARKS.md, "2026-12-04").
 *
 * Aliases differ from column names: old ClickHouse substitutes aliases inside aggregate arguments.
 */
import { Chunk, Effect, Metric, Option, Stream } from "effect"
import { normalize } from "../../domain/Decimal.js"
import * as Metrics from "../../observability/Metrics.js"
import type { AggregateGroup, AggregateQuery, EventStoreError } from "../EventStore.js"
import type { ChClient } from "./Client.js"
import { dateTimeFloor, epochMs, Sql, sql } from "./escape.js"
import { int, scopeCond, text } from "./FirstCopy.js"

/** Keyset position: the last (customer, meter, event name) returned. */
export type PageKey = readonly [string, string, string]

/** `plain`: GROUP BY over the rows; `exact`: first-ingested copy per (event, meter) first. */
export type ReadPath = "plain" | "exact"

type Attempt = <A>(operation: string, f: () => A) => Effect.Effect<A, EventStoreError>

const wholeSecond = (d: Date): boolean => epochMs(d) % 1000 === 0

/**
 * The window's rows of the read's meters (every ingestion stamp). Ingest writes `timestamp` as
 * the whole-second floor of `timestamp_ms` (escape.ts `tsvDateTime`), so when both ends of the
 * window are whole seconds, [start, end) on the DateTime alone is exactly [start, end) on the
 * milliseconds, and the `timestamp_ms` column is not read at all. Other windows bound the
 * seconds coarsely (the end's second included) and the milliseconds exactly.
 */
const windowCond = (query: AggregateQuery): Sql => {
  const time =
    wholeSecond(query.windowStart) && wholeSecond(query.windowEnd)
      ? sql`timestamp >= ${dateTimeFloor(query.windowStart)} AND timestamp < ${dateTimeFloor(query.windowEnd)}`
      : sql`timestamp >= ${dateTimeFloor(query.windowStart)} AND timestamp <= ${dateTimeFloor(query.windowEnd)}
    AND timestamp_ms >= ${epochMs(query.windowStart)} AND timestamp_ms < ${epochMs(query.windowEnd)}`
  return sql`${scopeCond(query.scope)}
    AND ${time}
    AND meter_id IN ${query.meterIds}`
}

const keysetCond = (after: Option.Option<PageKey>): Sql =>
  Option.match(after, {
    onNone: () => new Sql(""),
    onSome: ([c, m, n]) => sql` HAVING c > ${c} OR (c = ${c} AND (m > ${m} OR (m = ${m} AND n > ${n})))`
  })

/** One page of the window by the given path. */
export const pageSql = (path: ReadPath, query: AggregateQuery, after: Option.Option<PageKey>): Sql => {
  const beforeMs = epochMs(query.ingestedBefore)
  if (path === "plain") {
    const lower = query.ingestedAfter ? sql` AND ingested_at_ms > ${epochMs(query.ingestedAfter)}` : new Sql("")
    return sql`SELECT customer_id AS c, meter_id AS m, event_name AS n, toString(sum(qty_billable)) AS quantity, count() AS event_count
      FROM events_processed
      WHERE ${windowCond(query)} AND ingested_at_ms <= ${beforeMs}${lower} AND qty_billable <> 0
      GROUP BY c, m, n${keysetCond(after)}
      ORDER BY c, m, n
      LIMIT ${query.pageSize}`
  }
  const lower = query.ingestedAfter ? sql` AND first_ingested > ${epochMs(query.ingestedAfter)}` : new Sql("")
  return sql`SELECT c, m, n, toString(sum(qb)) AS quantity, count() AS event_count FROM (
      SELECT meter_id AS m, event_id AS e,
             min(ingested_at_ms) AS first_ingested,
             argMin(qty_billable, ingested_at_ms) AS qb,
             argMin(customer_id, ingested_at_ms) AS c,
             argMin(event_name, ingested_at_ms) AS n
      FROM events_processed
      WHERE ${windowCond(query)}
      GROUP BY m, e
    )
    WHERE first_ingested <= ${beforeMs}${lower} AND qb <> 0
    GROUP BY c, m, n${keysetCond(after)}
    ORDER BY c, m, n
    LIMIT ${query.pageSize}`
}

/** Rows and distinct (event, meter) pairs of the window: equal when ingest deduplication held. */
export const auditSql = (query: AggregateQuery): Sql =>
  sql`SELECT count() AS row_count, uniqExact(cityHash64(event_id, meter_id)) AS pair_count FROM events_processed WHERE ${windowCond(query)}`

export const makeAggregate = (ch: ChClient, attempt: Attempt) => {
  const fetchPage = Effect.fn("EventStore.aggregateBillable.page")(
    function* (path: ReadPath, query: AggregateQuery, after: Option.Option<PageKey>) {
      yield* Effect.annotateCurrentSpan({ path })
      const q = yield* attempt("aggregateBillable", () => pageSql(path, query, after))
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
      const next: Option.Option<PageKey> =
        groups.length < query.pageSize || last === undefined ? Option.none() : Option.some([last.customerId, last.meterId, last.eventName] as const)
      return { groups, next }
    }
  )

  /** Every page after `from` (none: the stream is done). */
  const pagesAfter = (path: ReadPath, query: AggregateQuery, from: Option.Option<PageKey>): Stream.Stream<AggregateGroup, EventStoreError> =>
    Option.isNone(from)
      ? Stream.empty
      : Stream.paginateChunkEffect(from.value, (after: PageKey) =>
          Effect.map(fetchPage(path, query, Option.some(after)), ({ groups, next }) => [Chunk.fromIterable(groups), next] as const)
        )

  /** Whether the window holds exactly one row per (event, meter). */
  const audit = Effect.fn("EventStore.aggregateBillable.audit")(
    function* (query: AggregateQuery) {
      const rows = yield* ch.query("aggregateBillable.audit", yield* attempt("aggregateBillable", () => auditSql(query)))
      return yield* attempt("aggregateBillable", () => {
        const row = rows[0]
        return row === undefined ? { rows: 0, pairs: 0 } : { rows: int(row, "row_count"), pairs: int(row, "pair_count") }
      })
    }
  )

  /** Reads the whole window by one path, without the audit (the exact path, benchmarks). */
  const readPath = (path: ReadPath, query: AggregateQuery): Stream.Stream<AggregateGroup, EventStoreError> =>
    Stream.unwrap(
      Effect.map(fetchPage(path, query, Option.none()), ({ groups, next }) => Stream.concat(Stream.fromIterable(groups), pagesAfter(path, query, next)))
    )

  const aggregateBillable = (query: AggregateQuery): Stream.Stream<AggregateGroup, EventStoreError> => {
    if (query.meterIds.length === 0) return Stream.empty
    return Stream.unwrap(
      Effect.gen(function* () {
        if (!Number.isSafeInteger(query.pageSize) || query.pageSize < 1) {
          return yield* attempt("aggregateBillable", () => {
            throw new Error(`pageSize must be a positive integer, got ${query.pageSize}`)
          })
        }
        const [check, first] = yield* Effect.all([audit(query), fetchPage("plain", query, Option.none())], { concurrency: 2 })
        if (check.rows !== check.pairs) {
          yield* Metric.increment(Metrics.eventStoreDuplicateReadsTotal)
          yield* Effect.logWarning("duplicate processed rows in a window: read by the exact path").pipe(
            Effect.annotateLogs({
              tenant_id: query.scope.tenantId,
              window_start: query.windowStart.toISOString(),
              rows: check.rows,
              distinct_pairs: check.pairs
            })
          )
          return readPath("exact", query)
        }
        return Stream.concat(Stream.fromIterable(first.groups), pagesAfter("plain", query, first.next))
      })
    )
  }

  return { aggregateBillable, readPath, audit } as const
}

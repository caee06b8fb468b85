/**
 * The planning reads of the ClickHouse store: which windows got rows first ingested in a range
 * (`windowsWithLateRows`, asked by every scheduled run, src/sync/Planning.ts) and the earliest row.
 *
 * Why the late-window read goes through `processed_arrivals` (migration 0005) — measured, see
 * BENCHMARKS.md ("A month of events"): `events_processed` is sorted by event time, so a range of
 * INGESTION time prunes nothing there; reading it cost the tenant's whole history on every hourly
 * run (146 s per meter at 25M rows). The alternatives considered:
 * - bounding the scan by event time: ingest refuses only timestamps in the future
 *   (EventIngestor), so a late row may be months old; and Stripe's 35-day horizon (sync/Windows.ts)
 *   would still leave a whole month of history to read on every run;
 * - a data-skipping index on `ingested_at_ms`: ClickHouse 18.16 has none (they came in 19.x).
 * Ingest writes one arrival per row it writes, sorted by (scope, meter, ingestion time), so the
 * range is read through the primary index: a run reads the rows ingested since the last run.
 *
 * "First ingested in the range": ingest writes a row only for a pair not counted yet, or to repair
 * a claim left without its row, always at the claimed instant (clickhouse/FirstCopy.ts). So an
 * arrival in the range is a late row unless the pair has a copy ingested at or before the range's
 * start, and such a copy can only lie at the same instant (an insert its writer saw fail and the
 * server applied; a racing writer). That check reads `events_processed` at the seconds of the
 * range's arrivals only (the sort key's `timestamp`), not the history.
 */
import { Effect, Option } from "effect"
import type { TenantScope } from "../../domain/Ids.js"
import type { EventStoreError, LateWindowsQuery } from "../EventStore.js"
import type { ChClient } from "./Client.js"
import { epochMs, sql } from "./escape.js"
import { int, scopeCond } from "./FirstCopy.js"

export const makeLateReads = (
  ch: ChClient,
  attempt: <A>(operation: string, f: () => A) => Effect.Effect<A, EventStoreError>
) => {
  const windowsWithLateRows = Effect.fn("EventStore.windowsWithLateRows")(function* (query: LateWindowsQuery) {
    if (query.meterIds.length === 0) return [] as ReadonlyArray<Date>
    const q = yield* attempt("windowsWithLateRows", () => {
      if (!Number.isSafeInteger(query.windowMinutes) || query.windowMinutes < 1) {
        throw new Error(`windowMinutes must be a positive integer, got ${query.windowMinutes}`)
      }
      const windowMs = query.windowMinutes * 60_000
      const afterMs = epochMs(query.ingestedAfter)
      const beforeMs = epochMs(query.ingestedBefore)
      const scope = sql`${scopeCond(query.scope)} AND meter_id IN ${query.meterIds}`
      const arrived = sql`${scope} AND ingested_at_ms > ${afterMs} AND ingested_at_ms <= ${beforeMs}`
      return sql`SELECT DISTINCT intDiv(timestamp_ms, ${windowMs}) * ${windowMs} AS window_start
        FROM processed_arrivals
        WHERE ${arrived}
          AND (event_id, meter_id) NOT IN (
            SELECT event_id, meter_id FROM events_processed
            WHERE ${scope} AND ingested_at_ms <= ${afterMs}
              AND timestamp IN (SELECT toDateTime(intDiv(timestamp_ms, 1000)) FROM processed_arrivals WHERE ${arrived}))
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

  return { windowsWithLateRows, earliestProcessed } as const
}

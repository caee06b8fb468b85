/**
 * Processed rows written AROUND ingest deduplication (by hand, by a racing writer outside the
 * locks, by an insert applied after its writer gave up) are still billed exactly once, end to
 * end: the real service on PGlite + the ClickHouse server, the real StripeClient, the emulator.
 * Issue #16 item 1 moves work off the window read's path; whatever the design, these copies must
 * never reach Stripe at rest. Expected totals come from the BigInt oracle over the raw events.
 */
import { layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { expect } from "vitest"
import { makeClient, resolveConnection } from "../../src/events/clickhouse/Client.js"
import { sql } from "../../src/events/clickhouse/escape.js"
import { withClickHouse, CLICKHOUSE_TEST_DATABASE } from "../support/clickhouse.js"
import * as O from "../support/oracle.js"
import { TestTenant } from "../support/TestApp.js"
import { hoursAgo } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, syncLayer } from "./syncLayer.js"

withClickHouse((url) =>
  layer(syncLayer({ backend: "clickhouse" }), { excludeTestServices: true })("duplicate processed rows written around ingest (ClickHouse)", (it) => {
    /** Copies the processed row(s) of `eventId` straight into ClickHouse with a new ingestion stamp. */
    const injectCopy = (eventId: string, ingestedAtMs: number, withArrival: boolean) =>
      Effect.gen(function* () {
        const { scope } = yield* TestTenant
        const ch = yield* makeClient(resolveConnection({ url, database: CLICKHOUSE_TEST_DATABASE }))
        const where = sql`tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND event_id = ${eventId}`
        const rows = yield* ch.query("t", sql`SELECT count() AS n FROM events_processed WHERE ${where}`)
        expect(Number(rows[0]!["n"])).toBe(1)
        // a racing writer writes its arrival first (FirstCopy.ts), so its window is planned as late
        if (withArrival)
          yield* ch.command(
            "t",
            sql`INSERT INTO processed_arrivals (tenant_id, environment_id, meter_id, ingested_at_ms, event_id, timestamp_ms)
                SELECT tenant_id, environment_id, meter_id, ${ingestedAtMs}, event_id, timestamp_ms FROM events_processed WHERE ${where}`
          )
        yield* ch.command(
          "t",
          sql`INSERT INTO events_processed (tenant_id, environment_id, event_id, meter_id, customer_id, event_name, timestamp,
                timestamp_ms, ingested_at_ms, qty_total, qty_billable, version)
              SELECT tenant_id, environment_id, event_id, meter_id, customer_id, event_name, timestamp, timestamp_ms,
                ${ingestedAtMs}, qty_total, qty_billable, ${2n ** 42n - 1n - BigInt(ingestedAtMs)}
              FROM events_processed WHERE ${where}`
        )
      }).pipe(Effect.scoped)

    it.effect("a copy injected before the window's first pass, and one injected after it beside a genuine late event, are never billed", () =>
      Effect.gen(function* () {
        yield* configure()
        const tokens = yield* meter("tokens", { aggregation: "SUM", field: "tokens" })
        const made = yield* customer("dup-1")
        const c = { externalId: "dup-1", customerId: made.customerId, stripeId: made.stripeId }
        const ts = hoursAgo(3, 20)
        const qtys = ["7.25", "0.125", "3"]
        yield* ingest(qtys.map((q, i) => ({ event_id: `dup-e${i}`, event_name: "tokens", external_customer_id: c.externalId, timestamp: ts, properties: { tokens: q } })))
        const expected = O.format(O.sum(qtys))

        // before the first pass: a second row of dup-e0 in the same window, ingested later
        yield* injectCopy("dup-e0", (yield* Clock.currentTimeMillis) - 1_000, false)
        const first = yield* sync()
        expect(first.status).toBe("completed")
        expect(first.batchesFailed).toBe(0)
        expect(yield* stripeTotal(c.stripeId, tokens.stripeEventName)).toBe(expected)

        // after it: a copy of dup-e1 with a fresh stamp (and its arrival, as a racing writer writes
        // it first), then a genuine late event of the same window, so the next run plans the window
        // and reads the rows ingested since: the late event is a delta, the copy must not be
        yield* injectCopy("dup-e1", yield* Clock.currentTimeMillis, true)
        yield* ingest([{ event_id: "dup-late", event_name: "tokens", external_customer_id: c.externalId, timestamp: ts, properties: { tokens: "0.5" } }])
        const expectedAfter = O.format(O.sum([...qtys, "0.5"]))
        const second = yield* sync()
        expect(second.status).toBe("completed")
        expect(second.batchesFailed).toBe(0)
        // the late window was planned and read again (so the copy was in the read's range)
        const windowStart = Math.floor(Date.parse(ts) / 3_600_000) * 3_600_000
        expect(second.windows.map((w) => new Date(w.windowStart).getTime())).toContain(windowStart)
        // settled: what Stripe holds for the pair is the raw total, once
        const third = yield* sync()
        expect(third.batchesFailed).toBe(0)
        expect(yield* stripeTotal(c.stripeId, tokens.stripeEventName)).toBe(expectedAfter)
        const ledgered = (yield* batches).filter((b) => b.customerId === c.customerId && b.meterId === tokens.meterId)
        expect(O.format(O.sum(ledgered.map((b) => b.aggregatedQuantity)))).toBe(expectedAfter)
      })
    )
  })
)

/**
 * The sync HTTP API over the real server: manual sync (open window refused, dry run writes and
 * sends nothing, real run syncs), status, batch listing with cursor paging, reconciliation.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Context, DateTime, Effect, Layer } from "effect"
import { expect } from "vitest"
import type { BatchCursor } from "../../src/http/Cursors.js"
import { ManualSyncResult } from "../../src/http/SyncApi.js"
import { forEachBackend } from "../support/app.js"
import { ApiClient, apiError, raw } from "../support/TestApp.js"
import { hoursAgo, type MeterSetup } from "./support.js"
import { configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

const hourStart = (h: number) => hoursAgo(h)
const instant = (h: number) => DateTime.unsafeMake(hourStart(h))

/** What the shared set-up made: the tokens meter and customer a's Stripe id. */
class Seeded extends Context.Tag("test/api/Seeded")<Seeded, { readonly tokens: MeterSetup; readonly stripeA: string }>() {}

/** The suite's tenant: configured, one meter, customers a and b, usage in two closed hours and the open one. */
const seeded = Layer.effect(
  Seeded,
  Effect.gen(function* () {
    yield* configure()
    const tokens = yield* meter("tokens", { aggregation: "SUM", field: "t" })
    const stripeA = (yield* customer("a")).stripeId
    yield* customer("b")
    yield* ingest([
      { event_id: "1", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(3, 1), properties: { t: "1.5" } },
      { event_id: "2", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(3, 2), properties: { t: "2.25" } },
      { event_id: "3", event_name: "tokens", external_customer_id: "b", timestamp: hoursAgo(3, 3), properties: { t: "4" } },
      { event_id: "4", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(2, 3), properties: { t: "7" } },
      { event_id: "5", event_name: "tokens", external_customer_id: "a", timestamp: new Date().toISOString(), properties: { t: "100" } }
    ])
    return { tokens, stripeA }
  })
)

forEachBackend(["pglite", "postgres"], (backend) =>
  layer(seeded.pipe(Layer.provideMerge(syncLayer({ backend }))), { excludeTestServices: true })(`sync HTTP API (${backend})`, (it) => {
    it.effect("refuses a window that is not closed", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const open = yield* apiError(api.sync.manual({ payload: { window_start: instant(0), window_end: instant(-1), dry_run: false } }))
        expect([open._tag, open.code]).toEqual(["InvalidInput", "window_not_closed"]) // 400
        expect(open.details).toMatchObject({ window_start: hourStart(0) })
        const bad = yield* raw("POST", "/v1/stripe/sync/manual", { body: JSON.stringify({ window_start: "yesterday", window_end: hourStart(0) }) })
        expect(bad.status).toBe(400)
      })
    )

    it.effect("dry run reports what would be sent, writes and sends nothing", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const [res, response] = yield* api.sync.manual({ payload: { window_start: instant(3), window_end: instant(2), dry_run: true }, withResponse: true })
        expect(response.status).toBe(200)
        expect(res.status).toBe("dry_run")
        expect(res.run_id).toBeNull()
        expect(res.windows).toHaveLength(1)
        expect(res.windows[0]).toMatchObject({ window_start: hourStart(3), groups: 2, quantity: "7.75", send_quantity: "7.75", batches_created: 0 })
        expect((yield* api.sync.batches({ urlParams: {} })).batches).toEqual([])
        expect((yield* SyncEmulator).state.meterEvents()).toEqual([])
      })
    )

    it.effect("manual sync runs the pipeline for the closed windows of the range", () =>
      Effect.gen(function* () {
        const { stripeA, tokens } = yield* Seeded
        // sent as a client would, without dry_run (it defaults to false)
        const manual = raw("POST", "/v1/stripe/sync/manual", { body: JSON.stringify({ window_start: hourStart(3), window_end: hourStart(2) }) })
        const res = yield* manual
        expect(res.status).toBe(200)
        const body = res.as(ManualSyncResult)
        expect(body).toMatchObject({ status: "completed", batches_created: 2, batches_synced: 2, batches_failed: 0, dry_run: false })
        expect(body.windows[0]!.batches).toMatchObject({ synced: 2, pending: 0 })
        expect(yield* stripeTotal(stripeA, tokens.stripeEventName)).toBe("3.75")
        // the hour after was not in the range
        expect((yield* manual).as(ManualSyncResult)).toMatchObject({ batches_created: 0, batches_synced: 0, stripe_requests: 0 })
      })
    )

    it.effect("status, batches with cursor paging", () =>
      Effect.gen(function* () {
        const { stripeA, tokens } = yield* Seeded
        const api = yield* ApiClient
        yield* sync()
        expect(yield* stripeTotal(stripeA, tokens.stripeEventName)).toBe("10.75")
        const [status, response] = yield* api.sync.status({ withResponse: true })
        expect(response.status).toBe(200)
        expect(status).toMatchObject({
          configured: true,
          sync_enabled: true,
          transport: "stream",
          counts: { synced: 3, pending: 0, failed: 0 },
          success_rate_24h: 1,
          oldest_unsynced_window: null,
          circuit_state: "closed"
        })
        expect(status.last_run?.trigger).toBe("schedule")
        expect(status.lag_seconds.p50).toBeGreaterThan(0)

        const pageAfter = (cursor: typeof BatchCursor.Type | null) =>
          api.sync.batches({ urlParams: { status: "synced", limit: 2, ...(cursor ? { cursor } : {}) }, withResponse: true })
        const seen: Array<string> = []
        let cursor: typeof BatchCursor.Type | null = null
        do {
          const [page, pageResponse]: Effect.Effect.Success<ReturnType<typeof pageAfter>> = yield* pageAfter(cursor)
          expect(pageResponse.status).toBe(200)
          seen.push(...page.batches.map((b) => b.id))
          cursor = page.next_cursor
        } while (cursor)
        expect(new Set(seen).size).toBe(3)
        const filtered = yield* api.sync.batches({ urlParams: { meter_id: tokens.meterId, from: instant(2) } })
        expect(filtered.batches).toHaveLength(1)
        expect(filtered.batches[0]).toMatchObject({ aggregated_quantity: "7", sent_quantity: "7", sync_status: "synced", sequence: 1 })
        expect((yield* raw("GET", "/v1/stripe/sync/batches?cursor=%%%")).status).toBe(400)
        expect((yield* raw("GET", "/v1/stripe/sync/status", { apiKey: "nope" })).status).toBe(401)
      })
    )

    it.effect("reconciliation: drift 0 when equal, the difference otherwise", () =>
      Effect.gen(function* () {
        const { stripeA } = yield* Seeded
        const api = yield* ApiClient
        const reconciliation = api.sync.reconciliation({ urlParams: { from: instant(5), to: instant(0) }, withResponse: true })
        // Stripe's meter event summaries become visible a few seconds after the events (the emulator
        // models the delay): wait until they show what was synced, as an operator would re-check.
        let [ok, okResponse] = yield* reconciliation
        for (let i = 0; i < 60 && okResponse.status === 200 && ok.summary.rows_with_drift !== 0; i++) {
          yield* Effect.sleep("250 millis")
          ;[ok, okResponse] = yield* reconciliation
        }
        expect(okResponse.status).toBe(200)
        expect(ok.summary).toMatchObject({ pairs: 2, rows: 3, rows_with_drift: 0, synced_total: "14.75", stripe_total: "14.75", drift_total: "0" })
        expect(ok.rows.every((r) => r.drift === "0")).toBe(true)
        // the ledger claims more than Stripe holds for one hour
        const sql = yield* PgClient.PgClient
        yield* sql`UPDATE stripe_sync_batches SET sent_quantity = sent_quantity + 1 WHERE aggregated_quantity = 7`
        const [drift] = yield* reconciliation
        expect(drift.summary).toMatchObject({ rows_with_drift: 1, drift_total: "-1" })
        const row = drift.rows.find((r) => r.drift !== "0")
        expect(row).toMatchObject({ hour: hourStart(2), synced: "8", stripe: "7", drift: "-1", stripe_customer_id: stripeA })
      })
    )
  })
)

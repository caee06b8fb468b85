/**
 * The sync HTTP API over the real server: manual sync (open window refused, dry run writes and
 * sends nothing, real run syncs), status, batch listing with cursor paging, reconciliation.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { forEachBackend } from "../support/app.js"
import { hoursAgo, type MeterSetup, startSyncHarness, type SyncHarness } from "./support.js"

forEachBackend(["pglite", "postgres"], (backend) => describe(`sync HTTP API (${backend})`, () => {
  let h: SyncHarness
  let tokens: MeterSetup
  let stripeA: string
  const hourStart = (h: number) => hoursAgo(h)

  beforeAll(async () => {
    h = await startSyncHarness({ backend })
    await h.configure()
    tokens = await h.meter("tokens", { aggregation: "SUM", field: "t" })
    stripeA = (await h.customer("a")).stripeId!
    await h.customer("b")
    await h.ingest([
      { event_id: "1", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(3, 1), properties: { t: "1.5" } },
      { event_id: "2", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(3, 2), properties: { t: "2.25" } },
      { event_id: "3", event_name: "tokens", external_customer_id: "b", timestamp: hoursAgo(3, 3), properties: { t: "4" } },
      { event_id: "4", event_name: "tokens", external_customer_id: "a", timestamp: hoursAgo(2, 3), properties: { t: "7" } },
      { event_id: "5", event_name: "tokens", external_customer_id: "a", timestamp: new Date().toISOString(), properties: { t: "100" } }
    ])
  })
  afterAll(async () => {
    await h?.dispose()
  })

  it("refuses a window that is not closed", async () => {
    const res = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart(0), window_end: hourStart(-1) })
    expect(res.status).toBe(400)
    expect(res.error.code).toBe("window_not_closed")
    expect(res.error.details).toMatchObject({ window_start: hourStart(0) })
    const bad = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: "yesterday", window_end: hourStart(0) })
    expect(bad.status).toBe(400)
  })

  it("dry run reports what would be sent, writes and sends nothing", async () => {
    const res = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart(3), window_end: hourStart(2), dry_run: true })
    expect(res.status).toBe(200)
    expect(res.data.status).toBe("dry_run")
    expect(res.data.run_id).toBeNull()
    expect(res.data.windows).toHaveLength(1)
    expect(res.data.windows[0]).toMatchObject({ window_start: hourStart(3), groups: 2, quantity: "7.75", send_quantity: "7.75", batches_created: 0 })
    expect((await h.app.request("GET", "/v1/stripe/sync/batches")).data.batches).toEqual([])
    expect(h.emulator.state.meterEvents()).toEqual([])
  })

  it("manual sync runs the pipeline for the closed windows of the range", async () => {
    const res = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart(3), window_end: hourStart(2) })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: "completed", batches_created: 2, batches_synced: 2, batches_failed: 0, dry_run: false })
    expect(res.data.windows[0].batches).toMatchObject({ synced: 2, pending: 0 })
    expect(h.stripeTotal(stripeA, tokens.stripeEventName)).toBe("3.75")
    // the hour after was not in the range
    const again = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hourStart(3), window_end: hourStart(2) })
    expect(again.body).toMatchObject({ batches_created: 0, batches_synced: 0, stripe_requests: 0 })
  })

  it("status, batches with cursor paging", async () => {
    await h.sync()
    expect(h.stripeTotal(stripeA, tokens.stripeEventName)).toBe("10.75")
    const status = await h.app.request("GET", "/v1/stripe/sync/status")
    expect(status.status).toBe(200)
    expect(status.body).toMatchObject({
      configured: true,
      sync_enabled: true,
      transport: "stream",
      counts: { synced: 3, pending: 0, failed: 0 },
      success_rate_24h: 1,
      oldest_unsynced_window: null,
      circuit_state: "closed"
    })
    expect(status.data.last_run?.trigger).toBe("schedule")
    expect(status.data.lag_seconds.p50).toBeGreaterThan(0)

    const seen: Array<string> = []
    let cursor: string | null = null
    do {
      const page: { status: number; data: { batches: ReadonlyArray<{ id: string }>; next_cursor: string | null } } = await h.app.request(
        "GET",
        `/v1/stripe/sync/batches?status=synced&limit=2${cursor ? `&cursor=${cursor}` : ""}` as const
      )
      expect(page.status).toBe(200)
      seen.push(...page.data.batches.map((b) => b.id))
      cursor = page.data.next_cursor
    } while (cursor)
    expect(new Set(seen).size).toBe(3)
    const filtered = await h.app.request("GET", `/v1/stripe/sync/batches?meter_id=${tokens.meterId}&from=${hourStart(2)}`)
    expect(filtered.data.batches).toHaveLength(1)
    expect(filtered.data.batches[0]).toMatchObject({ aggregated_quantity: "7", sent_quantity: "7", sync_status: "synced", sequence: 1 })
    expect((await h.app.request("GET", "/v1/stripe/sync/batches?cursor=%%%")).status).toBe(400)
    expect((await h.app.request("GET", "/v1/stripe/sync/status", undefined, { apiKey: "nope" })).status).toBe(401)
  })

  it("reconciliation: drift 0 when equal, the difference otherwise", async () => {
    const q = `/v1/stripe/sync/reconciliation?from=${hourStart(5)}&to=${hourStart(0)}` as const
    // Stripe's meter event summaries become visible a few seconds after the events (the emulator
    // models the delay): wait until they show what was synced, as an operator would re-check.
    let ok = await h.app.request("GET", q)
    for (let i = 0; i < 60 && ok.status === 200 && ok.data.summary.rows_with_drift !== 0; i++) {
      await new Promise((r) => setTimeout(r, 250))
      ok = await h.app.request("GET", q)
    }
    expect(ok.status).toBe(200)
    expect(ok.data.summary).toMatchObject({ pairs: 2, rows: 3, rows_with_drift: 0, synced_total: "14.75", stripe_total: "14.75", drift_total: "0" })
    expect(ok.data.rows.every((r: { drift: string }) => r.drift === "0")).toBe(true)
    // the ledger claims more than Stripe holds for one hour
    await h.app.run(
      Effect.flatMap(PgClient.PgClient, (sql) =>
        sql`UPDATE stripe_sync_batches SET sent_quantity = sent_quantity + 1 WHERE aggregated_quantity = 7`
      )
    )
    const drift = await h.app.request("GET", q)
    expect(drift.data.summary).toMatchObject({ rows_with_drift: 1, drift_total: "-1" })
    const row = drift.data.rows.find((r: { drift: string }) => r.drift !== "0")
    expect(row).toMatchObject({ hour: hourStart(2), synced: "8", stripe: "7", drift: "-1", stripe_customer_id: stripeA })
  })
}))

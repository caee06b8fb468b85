/**
 * The ledger's rules through the real pipeline: whole-unit carry, unsupported formulas,
 * too-late windows, non-retryable failures up to the retry cap, and the 24 h dedup rule
 * (a batch first sent more than 23 h ago is checked against Stripe before any resend).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { breakerAdmits, hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

const DAY = 86_400_000

forEachBackend(["pglite", "postgres"], (backend) => describe(`sync ledger rules (${backend})`, () => {
  let h: SyncHarness | undefined
  afterEach(async () => {
    await h?.dispose()
    h = undefined
  })

  const exec = (sql: string) => h!.app.run(Effect.flatMap(PgClient.PgClient, (c) => c.unsafe(sql)))

  it("whole units: integers sent, fraction carried, total never short by a whole unit", async () => {
    h = await startSyncHarness({ backend })
    await h.configure()
    const m = await h.meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
    const c = await h.customer("w1")
    const raw: Array<string> = []
    const events = []
    for (let hr = 8; hr >= 2; hr--) {
      for (const q of ["0.35", "0.2"]) {
        raw.push(q)
        events.push({ event_id: `w${hr}-${q}`, event_name: "gb", external_customer_id: "w1", timestamp: hoursAgo(hr, 7), properties: { gb: q } })
      }
    }
    await h.ingest(events)
    await h.sync()
    const sent = h.emulator.state.meterEvents().map((e) => e.value)
    for (const v of sent) expect(O.scaleOf(v)).toBe(0)
    const total = h.stripeTotal(c.stripeId!, m.stripeEventName)
    const drift = O.sub(O.sum(raw), total)
    expect(O.compare(drift, "0")).toBeGreaterThanOrEqual(0)
    expect(O.compare(drift, "1")).toBe(-1)
    expect(total).toBe(O.format(O.floor(O.sum(raw)))) // 7 × 0.55 = 3.85 → 3
    // windows whose integer part was 0 are recorded, not sent, and their fraction is carried
    const batches = await h.batches()
    expect(batches.filter((b) => b.skipReason === "zero_quantity").length).toBeGreaterThan(0)
    expect(O.format(O.sum(batches.map((b) => b.aggregatedQuantity)))).toBe(O.format(O.sum(raw)))
  })

  it("MAX meters mapped to a `last` Stripe meter are skipped with unsupported_formula", async () => {
    h = await startSyncHarness({ backend })
    await h.configure()
    await h.meter("peak", { aggregation: "MAX", field: "v", formula: "last" })
    await h.customer("x1")
    await h.ingest([{ event_id: "p1", event_name: "peak", external_customer_id: "x1", timestamp: hoursAgo(3), properties: { v: 9 } }])
    const r = await h.sync()
    expect(r.batchesCreated).toBe(1)
    expect(r.batchesSynced).toBe(0)
    const [b] = await h.batches()
    expect([b!.syncStatus, b!.skipReason]).toEqual(["skipped", "unsupported_formula"])
    expect(h.emulator.state.meterEvents()).toEqual([])
  })

  it("usage older than 35 days is skipped as too_late and never sent", async () => {
    h = await startSyncHarness({ backend })
    await h.configure()
    await h.meter("old", { aggregation: "SUM", field: "v" })
    await h.customer("o1")
    await h.ingest([
      { event_id: "o-old", event_name: "old", external_customer_id: "o1", timestamp: new Date(Date.now() - 36 * DAY).toISOString(), properties: { v: 5 } },
      { event_id: "o-new", event_name: "old", external_customer_id: "o1", timestamp: hoursAgo(2), properties: { v: 2 } }
    ])
    const r = await h.sync()
    expect(r.batchesSynced).toBe(1)
    const batches = await h.batches()
    expect(batches.map((b) => [b.aggregatedQuantity, b.syncStatus, b.skipReason]).sort()).toEqual([
      ["2", "synced", null],
      ["5", "skipped", "too_late"]
    ])
    expect(h.emulator.state.meterEvents().map((e) => e.value)).toEqual(["2"])
  })

  it("a non-retryable Stripe error fails the batch with Stripe's code, retried by later runs up to the cap", async () => {
    h = await startSyncHarness({ backend, env: { FLEXPRICE_SYNC_MAX_RETRIES: "2" } })
    await h.configure({ transport: "v1" })
    const m = await h.meter("api", { aggregation: "COUNT" })
    const ok = await h.customer("ok")
    const gone = await h.customer("gone")
    await Effect.runPromise(h.emulator.deleteCustomer(gone.stripeId!))
    await h.ingest([
      { event_id: "a1", event_name: "api", external_customer_id: "ok", timestamp: hoursAgo(2) },
      { event_id: "a2", event_name: "api", external_customer_id: "gone", timestamp: hoursAgo(2) }
    ])
    const r1 = await h.sync()
    expect([r1.batchesSynced, r1.batchesFailed]).toEqual([1, 1])
    expect(h.stripeTotal(ok.stripeId!, m.stripeEventName)).toBe("1")
    const failed = () => h!.batches().then((bs) => bs.find((b) => b.customerId === gone.customerId)!)
    let f = await failed()
    expect([f.syncStatus, f.errorCode, f.retryCount]).toEqual(["failed", "resource_missing", 1])
    expect(f.errorMessage).toMatch(/No such customer/)
    const r2 = await h.sync()
    expect(r2.batchesFailed).toBe(1)
    f = await failed()
    expect(f.retryCount).toBe(2)
    const calls = h.emulator.totalCalls()
    const r3 = await h.sync()
    expect(r3.batchesFailed).toBe(0)
    expect(h.emulator.totalCalls()).toBe(calls) // cap reached: left failed, not resent
    expect((await failed()).syncStatus).toBe("failed")
    expect(h.emulator.v1ConcurrentSameCustomerMeter()).toBe(0)
  })

  it("past the 24 h dedup horizon, Stripe's double sum of delivered batches counts as delivered (0.1 + 0.2)", async () => {
    h = await startSyncHarness({ backend })
    await h.configure()
    const m = await h.meter("frac", { aggregation: "SUM", field: "t" })
    const d = await h.customer("d")
    // Two batches for one hour: the window's first push, then a late event's delta.
    await h.ingest([{ event_id: "d1", event_name: "frac", external_customer_id: "d", timestamp: hoursAgo(3), properties: { t: "0.1" } }])
    await h.sync()
    await h.ingest([{ event_id: "d2", event_name: "frac", external_customer_id: "d", timestamp: hoursAgo(3, 30), properties: { t: "0.2" } }])
    await h.sync()
    expect(h.emulator.state.meterEvents().length).toBe(2)
    // Both delivered, but the process died before marking them.
    await exec(`UPDATE stripe_sync_batches SET sync_status = 'sending', synced_at = NULL,
      first_sent_at = now() - interval '25 hours' WHERE customer_id = '${d.customerId}'`)
    h.emulator.advanceClock(25 * 3_600_000)
    await h.sync()
    const bd = (await h.batches()).filter((x) => x.customerId === d.customerId)
    // Stripe reports 0.30000000000000004 (IEEE doubles); the ledger's exact 0.3 matches it.
    expect(bd.map((x) => [x.syncStatus, x.errorCode])).toEqual([
      ["synced", "verified_delivered"],
      ["synced", "verified_delivered"]
    ])
    expect(h.emulator.state.meterEvents().length).toBe(2) // not sent again
    expect(h.stripeTotal(d.stripeId!, m.stripeEventName)).toBe("0.3")
  })

  it("past the 24 h dedup horizon a batch is checked against Stripe: delivered → synced, absent → resent, unclear → needs_review", async () => {
    h = await startSyncHarness({ backend })
    await h.configure()
    const m = await h.meter("tok", { aggregation: "SUM", field: "t" })
    const a = await h.customer("a")
    const b = await h.customer("b")
    const c = await h.customer("c")
    await h.ingest([
      { event_id: "a1", event_name: "tok", external_customer_id: "a", timestamp: hoursAgo(3), properties: { t: "4" } },
      { event_id: "c1", event_name: "tok", external_customer_id: "c", timestamp: hoursAgo(3), properties: { t: "6" } }
    ])
    await h.sync()
    expect(h.emulator.state.meterEvents().length).toBe(2)
    // (a) delivered, but the process died before marking it: sending, first sent 25 h ago
    await exec(`UPDATE stripe_sync_batches SET sync_status = 'sending', synced_at = NULL,
      first_sent_at = now() - interval '25 hours' WHERE customer_id = '${a.customerId}'`)
    // (b) never delivered although an attempt was recorded 25 h ago
    await h.ingest([{ event_id: "b1", event_name: "tok", external_customer_id: "b", timestamp: hoursAgo(3), properties: { t: "5" } }])
    // (c) one delivered batch and one undelivered delta in the same hour, both unconfirmed
    await h.ingest([{ event_id: "c2", event_name: "tok", external_customer_id: "c", timestamp: hoursAgo(3, 30), properties: { t: "1" } }])
    // ledger the new rows without pushing: hold all Stripe traffic with an outage
    await Effect.runPromise(h.emulator.setFaults({ outageForMs: 60_000 }))
    await h.sync()
    await Effect.runPromise(h.emulator.setFaults({}))
    h.emulator.resetFaults()
    await exec(`UPDATE stripe_sync_batches SET first_sent_at = now() - interval '25 hours' WHERE customer_id = '${b.customerId}'`)
    await exec(`UPDATE stripe_sync_batches SET sync_status = 'sending', first_sent_at = now() - interval '25 hours'
      WHERE customer_id = '${c.customerId}'`)
    // Stripe's dedup memory of those identifiers is gone
    h.emulator.advanceClock(25 * 3_600_000)
    await breakerAdmits(h!) // the outage above may have opened it
    await h.sync()

    const byCustomer = async (id: string) => (await h!.batches()).filter((x) => x.customerId === id)
    const [ba] = await byCustomer(a.customerId)
    expect([ba!.syncStatus, ba!.errorCode]).toEqual(["synced", "verified_delivered"])
    expect(h.stripeTotal(a.stripeId!, m.stripeEventName)).toBe("4") // not sent twice
    const [bb] = await byCustomer(b.customerId)
    expect(bb!.syncStatus).toBe("synced")
    expect(h.stripeTotal(b.stripeId!, m.stripeEventName)).toBe("5") // resent once
    const bc = await byCustomer(c.customerId)
    expect(bc.map((x) => [x.syncStatus, x.errorCode])).toEqual([
      ["failed", "needs_review"],
      ["failed", "needs_review"]
    ])
    expect(h.stripeTotal(c.stripeId!, m.stripeEventName)).toBe("6")
    // never retried automatically
    const calls = h.emulator.totalCalls()
    await h.sync()
    expect(h.emulator.totalCalls()).toBe(calls)
  })
}))

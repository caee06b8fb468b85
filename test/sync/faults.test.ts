/**
 * Stripe misbehaving: a 429 storm, 5xx bursts with dropped connections, a 10-minute outage
 * (emulator clock), expired stream sessions, on both transports. Each ends with every batch
 * synced exactly once: the emulator's totals equal the raw totals and no identifier was
 * accepted twice.
 */
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { forEachBackend } from "../support/app.js"
import { breakerAdmits, expectTotals, seedUsage, startSyncHarness, type SyncHarness, syncUntilSettled } from "./support.js"

/**
 * Counted on what the emulator received, duplicates it ignored included (its accepted list is
 * already deduplicated, so a resend would not show there). Every fault injected here (429, 5xx,
 * dropped connection, outage, expired session) strikes before Stripe processes the request, so an
 * accepted event was always answered: receiving its identifier again is a needless resend.
 * v1: never two calls in flight for one (customer, meter) — Stripe refuses the second with a 429.
 */
const exactlyOnce = async (h: SyncHarness) => {
  const batches = await h.batches()
  expect(batches.filter((b) => b.syncStatus !== "synced")).toEqual([])
  const received = h.emulator.state.received()
  expect(received.filter((r) => r.outcome !== "accepted")).toEqual([])
  const ids = received.map((e) => e.identifier)
  expect(new Set(ids).size).toBe(ids.length)
  expect(ids.length).toBe(batches.length)
  expect(new Set(ids)).toEqual(new Set(batches.map((b) => b.identifier)))
  expect(h.emulator.state.meterEvents().length).toBe(batches.length)
  expect(h.emulator.v1ConcurrentSameCustomerMeter()).toBe(0)
}

forEachBackend(["pglite", "postgres"], (backend) => describe.each(["stream", "v1"] as const)(`sync under Stripe faults (%s transport, ${backend})`, (transport) => {
  let h: SyncHarness | undefined
  afterEach(async () => {
    await h?.dispose()
    h = undefined
  })

  it("a 429 storm ends with every batch synced exactly once", async () => {
    h = await startSyncHarness({ backend })
    await h.configure({ transport })
    const { expected } = await seedUsage(h, { customers: 15, events: 600, seed: 11 })
    await Effect.runPromise(h.emulator.setFaults({ rateLimitFraction: 0.7, seed: 3 }))
    const first = await h.sync()
    expect(first.batchesFailed).toBe(0)
    await Effect.runPromise(h.emulator.setFaults({ rateLimitFraction: 0.4, seed: 5 }))
    const reports = await syncUntilSettled(h, 40, () => breakerAdmits(h!))
    expect(reports.every((r) => r.batchesFailed === 0)).toBe(true)
    expect((h.emulator.statusCounts()["429"] ?? 0)).toBeGreaterThan(0)
    expect(expectTotals(h, expected)).toEqual([])
    await exactlyOnce(h)
  })

  // Issue #12 item 4: on v1 this stalled (the emulator kept a dropped call's customer + meter
  // slot forever; a saved 500 was replayed to the identifier-keyed first attempt of every run).
  it("5xx bursts and dropped connections end with every batch synced exactly once", async () => {
    h = await startSyncHarness({ backend })
    await h.configure({ transport })
    const { expected } = await seedUsage(h, { customers: 15, events: 600, seed: 12 })
    await Effect.runPromise(h.emulator.setFaults({ serverErrorFraction: 0.5, dropFraction: 0.15, serverErrorStatus: 503, seed: 9 }))
    const reports = await syncUntilSettled(h, 40, () => breakerAdmits(h!))
    expect(reports.every((r) => r.batchesFailed === 0)).toBe(true)
    const statuses = h.emulator.statusCounts()
    expect((statuses["503"] ?? 0) + (statuses["0"] ?? 0)).toBeGreaterThan(0)
    expect(expectTotals(h, expected)).toEqual([])
    await exactlyOnce(h)
  })

  it("a 10-minute outage leaves batches pending (never failed), then everything is synced", async () => {
    h = await startSyncHarness({ backend })
    await h.configure({ transport })
    const { expected } = await seedUsage(h, { customers: 10, events: 300, seed: 13 })
    await Effect.runPromise(h.emulator.setFaults({ outageForMs: 10 * 60_000 }))
    for (let i = 0; i < 3; i++) {
      const r = await h.sync()
      expect(r.status).toBe("partial")
      expect(r.batchesSynced).toBe(0)
      expect(r.batchesFailed).toBe(0)
      await breakerAdmits(h)
    }
    const during = await h.batches()
    expect(during.length).toBeGreaterThan(0)
    expect(during.every((b) => b.syncStatus === "pending")).toBe(true)
    expect(h.emulator.state.meterEvents().length).toBe(0)
    // ten minutes later (emulator clock)
    h.emulator.advanceClock(10 * 60_000 + 1_000)
    await breakerAdmits(h)
    await syncUntilSettled(h, 10, () => breakerAdmits(h!))
    expect(expectTotals(h, expected)).toEqual([])
    await exactlyOnce(h)
  })

  if (transport === "stream") {
    it("expired stream sessions are refreshed without loss or duplicates", async () => {
      h = await startSyncHarness({ backend })
      await h.configure({ transport })
      const { expected } = await seedUsage(h, { customers: 10, events: 300, seed: 14 })
      await h.sync()
      await Effect.runPromise(h.emulator.expireSessions())
      const more = await seedUsage(h, { customers: 10, events: 300, seed: 15, prefix: "n" })
      const r = await h.sync()
      expect(r.batchesFailed).toBe(0)
      expect(expectTotals(h, new Map([...expected, ...more.expected]))).toEqual([])
      await exactlyOnce(h)
    })
  }
}))

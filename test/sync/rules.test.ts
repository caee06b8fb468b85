/**
 * The ledger's rules through the real pipeline: whole-unit carry, unsupported formulas,
 * too-late windows, non-retryable failures up to the retry cap, and the 24 h dedup rule
 * (a batch first sent more than 23 h ago is checked against Stripe before any resend).
 *
 * Each test runs on a service and emulator of its own: the emulator's events, calls and clock
 * and the ledger are the test's alone.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { describe, expect } from "vitest"
import type { EventInput } from "../../src/domain/Models.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { rows } from "../support/TestApp.js"
import { hoursAgo } from "./support.js"
import { batches, breakerAdmits, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

const DAY = 86_400_000

/** The ledger rows of one customer. */
const batchesOf = (customerId: string) => Effect.map(batches, (all) => all.filter((b) => b.customerId === customerId))

forEachBackend(["pglite", "postgres"], (backend) =>
  describe(`sync ledger rules (${backend})`, () => {
    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("whole units: integers sent, fraction carried, total never short by a whole unit", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          const m = yield* meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
          const c = yield* customer("w1")
          const raw: Array<string> = []
          const events: Array<EventInput> = []
          for (let hr = 8; hr >= 2; hr--) {
            for (const q of ["0.35", "0.2"]) {
              raw.push(q)
              events.push({ event_id: `w${hr}-${q}`, event_name: "gb", external_customer_id: "w1", timestamp: hoursAgo(hr, 7), properties: { gb: q } })
            }
          }
          yield* ingest(events)
          yield* sync()
          const sent = emulator.state.meterEvents().map((e) => e.value)
          for (const v of sent) expect(O.scaleOf(v)).toBe(0)
          const total = yield* stripeTotal(c.stripeId, m.stripeEventName)
          const drift = O.sub(O.sum(raw), total)
          expect(O.compare(drift, "0")).toBeGreaterThanOrEqual(0)
          expect(O.compare(drift, "1")).toBe(-1)
          expect(total).toBe(O.format(O.floor(O.sum(raw)))) // 7 × 0.55 = 3.85 → 3
          // windows whose integer part was 0 are recorded, not sent, and their fraction is carried
          const ledger = yield* batches
          expect(ledger.filter((b) => b.skipReason === "zero_quantity").length).toBeGreaterThan(0)
          expect(O.format(O.sum(ledger.map((b) => b.aggregatedQuantity)))).toBe(O.format(O.sum(raw)))
        })
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("MAX meters mapped to a `last` Stripe meter are skipped with unsupported_formula", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          yield* meter("peak", { aggregation: "MAX", field: "v", formula: "last" })
          yield* customer("x1")
          yield* ingest([{ event_id: "p1", event_name: "peak", external_customer_id: "x1", timestamp: hoursAgo(3), properties: { v: 9 } }])
          const r = yield* sync()
          expect(r.batchesCreated).toBe(1)
          expect(r.batchesSynced).toBe(0)
          const [b] = yield* batches
          expect([b!.syncStatus, b!.skipReason]).toEqual(["skipped", "unsupported_formula"])
          expect(emulator.state.meterEvents()).toEqual([])
        })
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("usage older than 35 days is skipped as too_late and never sent", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          yield* meter("old", { aggregation: "SUM", field: "v" })
          yield* customer("o1")
          yield* ingest([
            { event_id: "o-old", event_name: "old", external_customer_id: "o1", timestamp: new Date(Date.now() - 36 * DAY).toISOString(), properties: { v: 5 } },
            { event_id: "o-new", event_name: "old", external_customer_id: "o1", timestamp: hoursAgo(2), properties: { v: 2 } }
          ])
          const r = yield* sync()
          expect(r.batchesSynced).toBe(1)
          const ledger = yield* batches
          expect(ledger.map((b) => [b.aggregatedQuantity, b.syncStatus, b.skipReason]).sort()).toEqual([
            ["2", "synced", null],
            ["5", "skipped", "too_late"]
          ])
          expect(emulator.state.meterEvents().map((e) => e.value)).toEqual(["2"])
        })
      )
    })

    layer(syncLayer({ backend, env: { FLEXPRICE_SYNC_MAX_RETRIES: "2" } }), { excludeTestServices: true })((it) => {
      it.effect("a non-retryable Stripe error fails the batch with Stripe's code, retried by later runs up to the cap", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure({ transport: "v1" })
          const m = yield* meter("api", { aggregation: "COUNT" })
          const ok = yield* customer("ok")
          const gone = yield* customer("gone")
          yield* emulator.deleteCustomer(gone.stripeId)
          yield* ingest([
            { event_id: "a1", event_name: "api", external_customer_id: "ok", timestamp: hoursAgo(2) },
            { event_id: "a2", event_name: "api", external_customer_id: "gone", timestamp: hoursAgo(2) }
          ])
          const r1 = yield* sync()
          expect([r1.batchesSynced, r1.batchesFailed]).toEqual([1, 1])
          expect(yield* stripeTotal(ok.stripeId, m.stripeEventName)).toBe("1")
          const failed = Effect.map(batchesOf(gone.customerId), (bs) => bs[0]!)
          let f = yield* failed
          expect([f.syncStatus, f.errorCode, f.retryCount]).toEqual(["failed", "resource_missing", 1])
          expect(f.errorMessage).toMatch(/No such customer/)
          const r2 = yield* sync()
          expect(r2.batchesFailed).toBe(1)
          f = yield* failed
          expect(f.retryCount).toBe(2)
          const calls = emulator.totalCalls()
          const r3 = yield* sync()
          expect(r3.batchesFailed).toBe(0)
          expect(emulator.totalCalls()).toBe(calls) // cap reached: left failed, not resent
          expect((yield* failed).syncStatus).toBe("failed")
          expect(emulator.v1ConcurrentSameCustomerMeter()).toBe(0)
        })
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("past the 24 h dedup horizon, Stripe's double sum of delivered batches counts as delivered (0.1 + 0.2)", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          const m = yield* meter("frac", { aggregation: "SUM", field: "t" })
          const d = yield* customer("d")
          // Two batches for one hour: the window's first push, then a late event's delta.
          yield* ingest([{ event_id: "d1", event_name: "frac", external_customer_id: "d", timestamp: hoursAgo(3), properties: { t: "0.1" } }])
          yield* sync()
          yield* ingest([{ event_id: "d2", event_name: "frac", external_customer_id: "d", timestamp: hoursAgo(3, 30), properties: { t: "0.2" } }])
          yield* sync()
          expect(emulator.state.meterEvents().length).toBe(2)
          // Both delivered, but the process died before marking them.
          yield* rows(`UPDATE stripe_sync_batches SET sync_status = 'sending', synced_at = NULL,
            first_sent_at = now() - interval '25 hours' WHERE customer_id = '${d.customerId}'`)
          emulator.advanceClock(25 * 3_600_000)
          yield* sync()
          const bd = yield* batchesOf(d.customerId)
          // Stripe reports 0.30000000000000004 (IEEE doubles); the ledger's exact 0.3 matches it.
          expect(bd.map((x) => [x.syncStatus, x.errorCode])).toEqual([
            ["synced", "verified_delivered"],
            ["synced", "verified_delivered"]
          ])
          expect(emulator.state.meterEvents().length).toBe(2) // not sent again
          expect(yield* stripeTotal(d.stripeId, m.stripeEventName)).toBe("0.3")
        })
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("past the 24 h dedup horizon a batch is checked against Stripe: delivered → synced, absent → resent, unclear → needs_review", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          const m = yield* meter("tok", { aggregation: "SUM", field: "t" })
          const a = yield* customer("a")
          const b = yield* customer("b")
          const c = yield* customer("c")
          yield* ingest([
            { event_id: "a1", event_name: "tok", external_customer_id: "a", timestamp: hoursAgo(3), properties: { t: "4" } },
            { event_id: "c1", event_name: "tok", external_customer_id: "c", timestamp: hoursAgo(3), properties: { t: "6" } }
          ])
          yield* sync()
          expect(emulator.state.meterEvents().length).toBe(2)
          // (a) delivered, but the process died before marking it: sending, first sent 25 h ago
          yield* rows(`UPDATE stripe_sync_batches SET sync_status = 'sending', synced_at = NULL,
            first_sent_at = now() - interval '25 hours' WHERE customer_id = '${a.customerId}'`)
          // (b) never delivered although an attempt was recorded 25 h ago
          yield* ingest([{ event_id: "b1", event_name: "tok", external_customer_id: "b", timestamp: hoursAgo(3), properties: { t: "5" } }])
          // (c) one delivered batch and one undelivered delta in the same hour, both unconfirmed
          yield* ingest([{ event_id: "c2", event_name: "tok", external_customer_id: "c", timestamp: hoursAgo(3, 30), properties: { t: "1" } }])
          // ledger the new rows without pushing: hold all Stripe traffic with an outage
          yield* emulator.setFaults({ outageForMs: 60_000 })
          yield* sync()
          yield* emulator.setFaults({})
          emulator.resetFaults()
          yield* rows(`UPDATE stripe_sync_batches SET first_sent_at = now() - interval '25 hours' WHERE customer_id = '${b.customerId}'`)
          yield* rows(`UPDATE stripe_sync_batches SET sync_status = 'sending', first_sent_at = now() - interval '25 hours'
            WHERE customer_id = '${c.customerId}'`)
          // Stripe's dedup memory of those identifiers is gone
          emulator.advanceClock(25 * 3_600_000)
          yield* breakerAdmits // the outage above may have opened it
          yield* sync()

          const [ba] = yield* batchesOf(a.customerId)
          expect([ba!.syncStatus, ba!.errorCode]).toEqual(["synced", "verified_delivered"])
          expect(yield* stripeTotal(a.stripeId, m.stripeEventName)).toBe("4") // not sent twice
          const [bb] = yield* batchesOf(b.customerId)
          expect(bb!.syncStatus).toBe("synced")
          expect(yield* stripeTotal(b.stripeId, m.stripeEventName)).toBe("5") // resent once
          const bc = yield* batchesOf(c.customerId)
          expect(bc.map((x) => [x.syncStatus, x.errorCode])).toEqual([
            ["failed", "needs_review"],
            ["failed", "needs_review"]
          ])
          expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe("6")
          // never retried automatically
          const calls = emulator.totalCalls()
          yield* sync()
          expect(emulator.totalCalls()).toBe(calls)
        })
      )
    })
  })
)

/**
 * The ledger's carry and sequence rules through the real pipeline, on PGlite and PostgreSQL:
 * held whole-unit usage released later keeps carrying its fractions from batch to batch, and
 * three rounds of late events for one (customer, meter, hour) each become a delta batch with the
 * next sequence and its own identifier. Quantities mix 12 decimals with values ≥ 10^12; expected
 * totals come from the BigInt oracle on the raw inputs only.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { describe, expect } from "vitest"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { ApiClient } from "../support/TestApp.js"
import { HOUR, hoursAgo } from "./support.js"
import { batches, configure, customer, ingest, mapCustomer, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`sync carry and sequences (${backend})`, () => {
    // each test on a service and emulator of its own (as the harness per test): the emulator's
    // event counts and the ledger's windows are the test's alone
    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("held whole-unit usage, released when the mapping appears, carries its fractions across the released batches", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          const m = yield* meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
          const c = yield* (yield* ApiClient).customers.create({ payload: { external_id: "held" } })
          // one window each; alone, no window but the big one reaches a whole unit
          const raw: Array<[number, string]> = [
            [6, "0.600000000001"],
            [5, "0.7"],
            [4, "1000000000000.000000000009"],
            [3, "0.999999999999"],
            [2, "0.4"]
          ]
          yield* ingest(raw.map(([hr, q], i) => ({ event_id: `h${i}`, event_name: "gb", external_customer_id: "held", timestamp: hoursAgo(hr, 3), properties: { gb: q } })))
          yield* sync()
          const held = yield* batches
          expect(held.map((b) => [b.syncStatus, b.skipReason])).toEqual(raw.map(() => ["skipped", "no_mapping"]))
          expect(emulator.state.meterEvents()).toEqual([])

          const stripeId = yield* mapCustomer(c.id)
          const r = yield* sync()
          const total = O.sum(raw.map(([, q]) => q))
          // released oldest first, each with what the earlier ones left owed: floor of the sum
          expect(yield* stripeTotal(stripeId, m.stripeEventName)).toBe(O.format(O.floor(total)))
          const sent = emulator.state.meterEvents().map((e) => e.value)
          for (const v of sent) expect(O.scaleOf(v)).toBe(0)
          expect(r.batchesSynced).toBe(sent.length)
          // per window, in order: what is sent is the whole part of everything owed so far
          let owed = O.parse("0")
          const want: Array<string> = []
          for (const [, q] of raw) {
            owed = O.add(owed, q)
            const whole = O.floor(owed)
            want.push(O.format(whole))
            owed = O.sub(owed, whole)
          }
          const after = (yield* batches).slice().sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
          expect(after.map((b) => b.sentQuantity)).toEqual(want)

          // a late event after the release continues from the carried fraction
          yield* ingest([{ event_id: "h-late", event_name: "gb", external_customer_id: "held", timestamp: hoursAgo(2, 30), properties: { gb: "0.5" } }])
          yield* sync()
          expect(yield* stripeTotal(stripeId, m.stripeEventName)).toBe(O.format(O.floor(O.add(total, "0.5"))))
        })
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("three rounds of late events for one (customer, meter, hour): one delta batch each, next sequence, exact totals", () =>
        Effect.gen(function* () {
          const emulator = yield* SyncEmulator
          yield* configure()
          const m = yield* meter("tok", { aggregation: "SUM", field: "t" })
          const c = yield* customer("late")
          const ts = hoursAgo(3, 20)
          const windowStart = Math.floor(Date.parse(ts) / HOUR) * HOUR
          const rounds = [
            ["1000000000000.5", "0.000000000001"],
            ["0.123456789012"],
            ["2000000000000", "0.000000000009"],
            ["7.7"]
          ]
          const raw: Array<string> = []
          const received: Array<number> = []
          // what Stripe must hold: each round sends what is owed, cut to 15 digits; the rest is owed on
          let owed = O.parse("0")
          let stripe = O.parse("0")
          for (const [round, qs] of rounds.entries()) {
            yield* ingest(qs.map((q, i) => ({ event_id: `r${round}-${i}`, event_name: "tok", external_customer_id: "late", timestamp: ts, properties: { t: q } })))
            raw.push(...qs)
            const r = yield* sync()
            expect([r.batchesCreated, r.batchesSynced, r.batchesFailed]).toEqual([1, 1, 0])
            owed = O.add(owed, O.sum(qs))
            const sent = O.truncateDigits(owed, 15)
            owed = O.sub(owed, sent)
            stripe = O.add(stripe, sent)
            expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe(O.format(stripe))
            received.push(emulator.state.meterEvents().length)
          }
          // the first round's 25-digit total was cut and its tail carried; by the end nothing is owed
          expect(O.format(owed)).toBe("0")
          expect(O.format(stripe)).toBe(O.format(O.sum(raw)))
          const windowBatches = (yield* batches).filter((b) => b.windowStart.getTime() === windowStart)
          expect(windowBatches.map((b) => b.sequence).sort()).toEqual([1, 2, 3, 4])
          expect(new Set(windowBatches.map((b) => b.identifier)).size).toBe(4)
          expect(windowBatches.map((b) => b.aggregatedQuantity).sort()).toEqual(rounds.map((qs) => O.format(O.sum(qs))).sort())
          // every round reached Stripe as a new event (none was deduplicated as a resend)
          expect(received).toEqual([1, 2, 3, 4])
          // and a quiet run sends nothing
          const quiet = yield* sync()
          expect([quiet.batchesCreated, quiet.stripeRequests]).toEqual([0, 0])
        })
      )
    })
  })
})

/**
 * The ledger's carry and sequence rules through the real pipeline, on PGlite and PostgreSQL:
 * held whole-unit usage released later keeps carrying its fractions from batch to batch, and
 * three rounds of late events for one (customer, meter, hour) each become a delta batch with the
 * next sequence and its own identifier. Quantities mix 12 decimals with values ≥ 10^12; expected
 * totals come from the BigInt oracle on the raw inputs only.
 */
import { afterEach, describe, expect, it } from "vitest"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { HOUR, hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`sync carry and sequences (${backend})`, () => {
    let h: SyncHarness | undefined
    afterEach(async () => {
      await h?.dispose()
      h = undefined
    })

    it("held whole-unit usage, released when the mapping appears, carries its fractions across the released batches", async () => {
      h = await startSyncHarness({ backend })
      await h.configure()
      const m = await h.meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
      const c = await h.customer("held", false)
      // one window each; alone, no window but the big one reaches a whole unit
      const raw: Array<[number, string]> = [
        [6, "0.600000000001"],
        [5, "0.7"],
        [4, "1000000000000.000000000009"],
        [3, "0.999999999999"],
        [2, "0.4"]
      ]
      await h.ingest(raw.map(([hr, q], i) => ({ event_id: `h${i}`, event_name: "gb", external_customer_id: "held", timestamp: hoursAgo(hr, 3), properties: { gb: q } })))
      await h.sync()
      const held = await h.batches()
      expect(held.map((b) => [b.syncStatus, b.skipReason])).toEqual(raw.map(() => ["skipped", "no_mapping"]))
      expect(h.emulator.state.meterEvents()).toEqual([])

      const stripeId = await h.mapCustomer(c.customerId)
      const r = await h.sync()
      const total = O.sum(raw.map(([, q]) => q))
      // released oldest first, each with what the earlier ones left owed: floor of the sum
      expect(h.stripeTotal(stripeId, m.stripeEventName)).toBe(O.format(O.floor(total)))
      const sent = h.emulator.state.meterEvents().map((e) => e.value)
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
      const after = (await h.batches()).slice().sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime())
      expect(after.map((b) => b.sentQuantity)).toEqual(want)

      // a late event after the release continues from the carried fraction
      await h.ingest([{ event_id: "h-late", event_name: "gb", external_customer_id: "held", timestamp: hoursAgo(2, 30), properties: { gb: "0.5" } }])
      await h.sync()
      expect(h.stripeTotal(stripeId, m.stripeEventName)).toBe(O.format(O.floor(O.add(total, "0.5"))))
    })

    it("three rounds of late events for one (customer, meter, hour): one delta batch each, next sequence, exact totals", async () => {
      h = await startSyncHarness({ backend })
      await h.configure()
      const m = await h.meter("tok", { aggregation: "SUM", field: "t" })
      const c = await h.customer("late")
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
        await h.ingest(qs.map((q, i) => ({ event_id: `r${round}-${i}`, event_name: "tok", external_customer_id: "late", timestamp: ts, properties: { t: q } })))
        raw.push(...qs)
        const r = await h.sync()
        expect([r.batchesCreated, r.batchesSynced, r.batchesFailed]).toEqual([1, 1, 0])
        owed = O.add(owed, O.sum(qs))
        const sent = O.truncateDigits(owed, 15)
        owed = O.sub(owed, sent)
        stripe = O.add(stripe, sent)
        expect(h.stripeTotal(c.stripeId!, m.stripeEventName)).toBe(O.format(stripe))
        received.push(h.emulator.state.meterEvents().length)
      }
      // the first round's 25-digit total was cut and its tail carried; by the end nothing is owed
      expect(O.format(owed)).toBe("0")
      expect(O.format(stripe)).toBe(O.format(O.sum(raw)))
      const batches = (await h.batches()).filter((b) => b.windowStart.getTime() === windowStart)
      expect(batches.map((b) => b.sequence).sort()).toEqual([1, 2, 3, 4])
      expect(new Set(batches.map((b) => b.identifier)).size).toBe(4)
      expect(batches.map((b) => b.aggregatedQuantity).sort()).toEqual(rounds.map((qs) => O.format(O.sum(qs))).sort())
      // every round reached Stripe as a new event (none was deduplicated as a resend)
      expect(received).toEqual([1, 2, 3, 4])
      // and a quiet run sends nothing
      const quiet = await h.sync()
      expect([quiet.batchesCreated, quiet.stripeRequests]).toEqual([0, 0])
    })
  })
})

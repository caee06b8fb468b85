/**
 * Ledger rules that held batches must keep when they come back (issue #12 item 7):
 * - a whole-unit batch skipped after its carry was fixed (`mapping_deleted`) and revived later
 *   must not count its own remainder twice;
 * - the 23-hour resend check must not send batches an operator holds (`needs_review`) or that hit
 *   the retry cap;
 * - the resend horizon is checked when a batch is about to be sent, not only when its page is read.
 * Expected totals come from plain BigInt arithmetic on the inputs.
 *
 * Both tests share one service and tenant (meters and customers of their own); each reads the
 * ledger of its own customer only.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { inTestTenant, rows } from "../support/TestApp.js"
import { hoursAgo } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

/** Thousandths as BigInt (inputs here have at most 3 decimals). */
const milli = (q: string) => {
  const neg = q.startsWith("-")
  const [i, f = ""] = (neg ? q.slice(1) : q).split(".")
  const v = BigInt(i!) * 1000n + BigInt(f.padEnd(3, "0"))
  return neg ? -v : v
}

/** Switches the sync of `meterId`'s Stripe mapping on or off. */
const setSyncEnabled = (meterId: string, enabled: boolean) =>
  inTestTenant(
    Effect.gen(function* () {
      const repo = yield* MeterMappingRepo
      const m = (yield* repo.list).find((x) => x.meterId === meterId)
      if (m === undefined) return yield* Effect.dieMessage(`no mapping for ${meterId}`)
      yield* repo.upsert({ ...m, syncEnabled: enabled })
    })
  )

/** The ledger rows of one customer. */
const batchesOf = (customerId: string) => Effect.map(batches, (all) => all.filter((b) => b.customerId === customerId))

layer(syncLayer(), { excludeTestServices: true })("ledger repairs", (it) => {
  it.effect("a whole-unit batch revived after its meter mapping comes back sends its own remainder once", () =>
    Effect.gen(function* () {
      const emulator = yield* SyncEmulator
      yield* configure()
      const m = yield* meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
      const c = yield* customer("r1")
      yield* ingest([{ event_id: "r1", event_name: "gb", external_customer_id: "r1", timestamp: hoursAgo(3, 5), properties: { gb: "1.6" } }])
      // ledgered with its send amount fixed (1, 0.6 carried), but Stripe is out: stays pending
      yield* emulator.setFaults({ outageForMs: 60 * 60_000 })
      yield* sync()
      emulator.resetFaults()
      // the mapping is switched off before the push: the batch is skipped `mapping_deleted`
      yield* setSyncEnabled(m.meterId, false)
      yield* sync()
      expect((yield* batchesOf(c.customerId)).map((b) => [b.syncStatus, b.skipReason])).toEqual([["skipped", "mapping_deleted"]])
      // back on: re-evaluated and sent
      yield* setSyncEnabled(m.meterId, true)
      yield* sync()
      const total = milli(yield* stripeTotal(c.stripeId, m.stripeEventName))
      const usage = milli("1.6")
      expect(total % 1000n).toBe(0n)
      expect(total).toBe((usage / 1000n) * 1000n) // floor: 1 whole unit, the 0.6 stays owed
    })
  )

  it.effect("the 23-hour resend check never releases batches held for an operator or past the retry cap", () =>
    Effect.gen(function* () {
      const emulator = yield* SyncEmulator
      yield* configure()
      const m = yield* meter("calls", { aggregation: "SUM", field: "n" })
      const c = yield* customer("v1")
      // three passes over one hour, Stripe out each time: three pending batches (sequences 1–3)
      yield* emulator.setFaults({ outageForMs: 60 * 60_000 })
      const quantities = ["4", "20", "300"]
      for (const [i, q] of quantities.entries()) {
        yield* ingest([{ event_id: `v${i}`, event_name: "calls", external_customer_id: "v1", timestamp: hoursAgo(30, 10), properties: { n: q } }])
        yield* sync()
      }
      emulator.resetFaults()
      const bySeq = new Map((yield* batchesOf(c.customerId)).map((b) => [b.sequence, b]))
      expect([...bySeq.keys()].sort()).toEqual([1, 2, 3])
      // all three first went out 25 h ago; an operator holds #1, #2 used up its retries, #3 is pending
      yield* rows(`UPDATE stripe_sync_batches SET first_sent_at = now() - interval '25 hours' WHERE customer_id = '${c.customerId}'`)
      yield* rows(`UPDATE stripe_sync_batches SET sync_status = 'failed', error_code = 'needs_review' WHERE id = '${bySeq.get(1)!.id}'`)
      yield* rows(`UPDATE stripe_sync_batches SET sync_status = 'failed', error_code = 'invalid_request', retry_count = 99 WHERE id = '${bySeq.get(2)!.id}'`)
      yield* sync()
      yield* sync()
      const after = new Map((yield* batchesOf(c.customerId)).map((b) => [b.sequence, b]))
      expect([after.get(1)!.syncStatus, after.get(1)!.errorCode]).toEqual(["failed", "needs_review"])
      expect([after.get(2)!.syncStatus, after.get(2)!.retryCount]).toEqual(["failed", 99])
      expect(after.get(3)!.syncStatus).toBe("synced")
      // Stripe holds only the pending batch's usage (#3)
      expect(milli(yield* stripeTotal(c.stripeId, m.stripeEventName))).toBe(milli(quantities[2]!))
    })
  )
})

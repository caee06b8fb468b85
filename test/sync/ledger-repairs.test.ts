/**
 * Ledger rules that held batches must keep when they come back (issue #12 item 7):
 * - a whole-unit batch skipped after its carry was fixed (`mapping_deleted`) and revived later
 *   must not count its own remainder twice;
 * - the 23-hour resend check must not send batches an operator holds (`needs_review`) or that hit
 *   the retry cap;
 * - the resend horizon is checked when a batch is about to be sent, not only when its page is read.
 * Expected totals come from plain BigInt arithmetic on the inputs.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { hoursAgo, startSyncHarness, type SyncHarness } from "./support.js"

/** Thousandths as BigInt (inputs here have at most 3 decimals). */
const milli = (q: string) => {
  const neg = q.startsWith("-")
  const [i, f = ""] = (neg ? q.slice(1) : q).split(".")
  const v = BigInt(i!) * 1000n + BigInt(f.padEnd(3, "0"))
  return neg ? -v : v
}

describe("ledger repairs", () => {
  let h: SyncHarness | undefined
  afterEach(async () => {
    await h?.dispose()
    h = undefined
  })
  const exec = (sql: string) => h!.app.run(Effect.flatMap(PgClient.PgClient, (c) => c.unsafe(sql)))

  const setSyncEnabled = async (meterId: string, enabled: boolean) => {
    const mappings = await h!.asTenant(Effect.flatMap(MeterMappingRepo, (r) => r.list))
    const m = mappings.find((x) => x.meterId === meterId)!
    await h!.asTenant(Effect.flatMap(MeterMappingRepo, (r) => r.upsert({ ...m, syncEnabled: enabled })))
  }

  it("a whole-unit batch revived after its meter mapping comes back sends its own remainder once", async () => {
    h = await startSyncHarness()
    await h.configure()
    const m = await h.meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
    const c = await h.customer("r1")
    await h.ingest([{ event_id: "r1", event_name: "gb", external_customer_id: "r1", timestamp: hoursAgo(3, 5), properties: { gb: "1.6" } }])
    // ledgered with its send amount fixed (1, 0.6 carried), but Stripe is out: stays pending
    await Effect.runPromise(h.emulator.setFaults({ outageForMs: 60 * 60_000 }))
    await h.sync()
    h.emulator.resetFaults()
    // the mapping is switched off before the push: the batch is skipped `mapping_deleted`
    await setSyncEnabled(m.meterId, false)
    await h.sync()
    expect((await h.batches()).map((b) => [b.syncStatus, b.skipReason])).toEqual([["skipped", "mapping_deleted"]])
    // back on: re-evaluated and sent
    await setSyncEnabled(m.meterId, true)
    await h.sync()
    const total = milli(h.stripeTotal(c.stripeId!, m.stripeEventName))
    const usage = milli("1.6")
    expect(total % 1000n).toBe(0n)
    expect(total).toBe((usage / 1000n) * 1000n) // floor: 1 whole unit, the 0.6 stays owed
  })

  it("the 23-hour resend check never releases batches held for an operator or past the retry cap", async () => {
    h = await startSyncHarness()
    await h.configure()
    const m = await h.meter("calls", { aggregation: "SUM", field: "n" })
    const c = await h.customer("v1")
    // three passes over one hour, Stripe out each time: three pending batches (sequences 1–3)
    await Effect.runPromise(h.emulator.setFaults({ outageForMs: 60 * 60_000 }))
    const quantities = ["4", "20", "300"]
    for (const [i, q] of quantities.entries()) {
      await h.ingest([{ event_id: `v${i}`, event_name: "calls", external_customer_id: "v1", timestamp: hoursAgo(30, 10), properties: { n: q } }])
      await h.sync()
    }
    h.emulator.resetFaults()
    const bySeq = new Map((await h.batches()).map((b) => [b.sequence, b]))
    expect([...bySeq.keys()].sort()).toEqual([1, 2, 3])
    // all three first went out 25 h ago; an operator holds #1, #2 used up its retries, #3 is pending
    await exec(`UPDATE stripe_sync_batches SET first_sent_at = now() - interval '25 hours' WHERE customer_id = '${c.customerId}'`)
    await exec(`UPDATE stripe_sync_batches SET sync_status = 'failed', error_code = 'needs_review' WHERE id = '${bySeq.get(1)!.id}'`)
    await exec(`UPDATE stripe_sync_batches SET sync_status = 'failed', error_code = 'invalid_request', retry_count = 99 WHERE id = '${bySeq.get(2)!.id}'`)
    await h.sync()
    await h.sync()
    const after = new Map((await h.batches()).map((b) => [b.sequence, b]))
    expect([after.get(1)!.syncStatus, after.get(1)!.errorCode]).toEqual(["failed", "needs_review"])
    expect([after.get(2)!.syncStatus, after.get(2)!.retryCount]).toEqual(["failed", 99])
    expect(after.get(3)!.syncStatus).toBe("synced")
    // Stripe holds only the pending batch's usage (#3)
    expect(milli(h.stripeTotal(c.stripeId!, m.stripeEventName))).toBe(milli(quantities[2]!))
  })
})

/**
 * Batches skipped for a reason that can go away (`no_mapping`, `mapping_deleted`) are looked at
 * again each run: once the customer mapping exists and the meter is supported, they become
 * pending with the carry applied in window order, so a mapping added later still delivers usage
 * that Stripe will accept (within its create horizon).
 */
import { Effect } from "effect"
import * as Decimal from "../domain/Decimal.js"
import { pairKey } from "../repositories/SyncBatchRepo.js"
import { amountToSend } from "./Carry.js"
import type { RunContext } from "./RunContext.js"
import * as W from "./Windows.js"

/** Skipped no_mapping / mapping_deleted batches whose mappings now exist become pending. */
export const reevaluate = Effect.fn("Reevaluation.reevaluate")(function* (ctx: RunContext) {
  const { mappingByMeter, now, supported } = ctx
  const { repo } = ctx.deps
  const since = new Date(now - W.STRIPE_MAX_AGE_MS + W.CREATE_MARGIN_MS)
  let afterId: string | undefined
  let revived = 0
  for (;;) {
    const rows = yield* repo.skippedForReevaluation({ since, limit: 5000, afterId })
    if (rows.length === 0) break
    afterId = rows[rows.length - 1]!.id
    const stripeCustomers = yield* ctx.customers.activeByCustomerIds([...new Set(rows.map((r) => r.customerId))])
    const ready = rows
      .filter((r) => stripeCustomers.has(r.customerId) && supported.has(r.meterId))
      .sort((a, b) => a.windowStart.getTime() - b.windowStart.getTime() || a.sequence - b.sequence)
    if (ready.length === 0) continue
    const owed = yield* repo.outstanding([...new Set(ready.map((r) => r.customerId))], [...new Set(ready.map((r) => r.meterId))])
    // A batch skipped at push time (`mapping_deleted`) kept the send amount it was ledgered
    // with, so the outstanding sum above includes its own remainder; its send amount is decided
    // again below from its whole quantity, so that remainder must not be counted twice.
    for (const r of ready) {
      if (r.sentQuantity === null) continue
      const key = pairKey(r.customerId, r.meterId)
      owed.set(key, Decimal.sub(owed.get(key) ?? "0", Decimal.sub(r.aggregatedQuantity, r.sentQuantity)))
    }
    const updates = ready.map((r) => {
      const key = pairKey(r.customerId, r.meterId)
      const mapping = mappingByMeter.get(r.meterId)!
      const { sent, outstanding } = amountToSend(owed.get(key) ?? "0", r.aggregatedQuantity, mapping.wholeUnits)
      owed.set(key, outstanding)
      const zero = Decimal.isZero(sent)
      return {
        id: r.id,
        sentQuantity: sent,
        providerMeterId: mapping.providerMeterId,
        status: zero ? ("skipped" as const) : ("pending" as const),
        skipReason: zero ? ("zero_quantity" as const) : null
      }
    })
    yield* repo.makeSendable(updates, new Date(now))
    revived += updates.length
  }
  yield* Effect.annotateCurrentSpan({ "sync.revived": revived })
  return revived
})

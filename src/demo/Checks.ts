/**
 * The demo's verdict: per-meter totals from our ledger and from what Stripe received, each
 * compared with the generator's exact totals, plus the webhook and reconciliation checks.
 */
import type { StripeEmulatorHandle } from "../stripe-emulator/index.js"
import * as Decimal from "../domain/Decimal.js"
import type { Totals } from "./Generator.js"
import type { BatchView, DemoReport, MeterSummary, ReconciliationSummary } from "./Model.js"
import type { DemoMeter } from "./Onboarding.js"

export interface CheckInput {
  readonly emulator: StripeEmulatorHandle
  readonly meters: ReadonlyArray<DemoMeter>
  readonly batches: ReadonlyArray<BatchView>
  readonly expected: Totals
  readonly externalIds: ReadonlyArray<string>
  readonly noStripeIds: ReadonlyArray<string>
  readonly stripeIdByExternal: ReadonlyMap<string, string>
  readonly retriedBatchIds: ReadonlySet<string>
  readonly webhooks: DemoReport["webhooks"]
  readonly reconciliation: ReconciliationSummary
}

export const checkTotals = (input: CheckInput) => {
  const { emulator, meters, batches, expected, externalIds, noStripeIds, stripeIdByExternal, retriedBatchIds } = input
  const rs = input.reconciliation
  const { non2xx, reorderedFinalEmail, duplicateRecordedOnce } = input.webhooks
  const reorderedEmail = input.webhooks.reorderedExpectedEmail
  const mappedSet = new Set(externalIds)
  const noStripeSet = new Set(noStripeIds)
  const stripeTotals = emulator.state.totals()
  const meterSummaries: Array<MeterSummary> = meters.map((m) => {
    const mine = batches.filter((b) => b.meter_id === m.meterId)
    const synced = mine.filter((b) => b.sync_status === "synced")
    const skipped = mine.filter((b) => b.sync_status === "skipped")
    return {
      meter: m.name,
      meterId: m.meterId,
      stripeMeterId: m.stripeMeterId,
      events: expected.events(m.name),
      expectedAll: expected.meterTotal(m.name),
      expectedMapped: expected.meterTotal(m.name, mappedSet),
      ledgerTotal: Decimal.sum(mine.map((b) => b.aggregated_quantity)),
      ledgerSynced: Decimal.sum(synced.map((b) => b.sent_quantity ?? "0")),
      stripeReceived: Decimal.sum(stripeTotals.filter((t) => t.eventName === m.name).map((t) => t.sum)),
      batchesSynced: synced.length,
      batchesRetried: mine.filter((b) => retriedBatchIds.has(b.id)).length,
      lateDeltas: mine.filter((b) => b.sequence > 1).length,
      batchesSkipped: skipped.length,
      skippedQuantity: Decimal.sum(skipped.map((b) => b.aggregated_quantity)),
      batchesFailed: mine.filter((b) => b.sync_status === "failed").length,
      batchesPending: mine.filter((b) => b.sync_status === "pending" || b.sync_status === "sending").length
    }
  })

  // ---------------------------------------------------------------- checks
  const failures: Array<string> = []
  let pairsChecked = 0
  let pairsMismatched = 0
  for (const m of meters) {
    for (const externalId of externalIds) {
      const want = expected.get(externalId, m.name)
      const got = emulator.total(stripeIdByExternal.get(externalId)!, m.name).sum
      pairsChecked++
      if (!Decimal.equals(want, got)) {
        pairsMismatched++
        if (pairsMismatched <= 5) failures.push(`${externalId} ${m.name}: generated ${want}, Stripe received ${got}`)
      }
    }
  }
  for (const s of meterSummaries) {
    if (!Decimal.equals(s.ledgerTotal, s.expectedAll)) failures.push(`${s.meter}: our ledger has ${s.ledgerTotal}, the generator sent ${s.expectedAll}`)
    if (!Decimal.equals(s.ledgerSynced, s.expectedMapped))
      failures.push(`${s.meter}: our ledger synced ${s.ledgerSynced}, the generator sent ${s.expectedMapped} for mapped customers`)
    if (!Decimal.equals(s.stripeReceived, s.expectedMapped))
      failures.push(`${s.meter}: Stripe received ${s.stripeReceived}, the generator sent ${s.expectedMapped} for mapped customers`)
    const unmappedWant = expected.meterTotal(s.meter, noStripeSet)
    if (!Decimal.equals(s.skippedQuantity, unmappedWant))
      failures.push(`${s.meter}: ${s.skippedQuantity} held as skipped, ${unmappedWant} generated for customers without Stripe`)
    if (s.batchesFailed > 0 || s.batchesPending > 0) failures.push(`${s.meter}: ${s.batchesFailed} failed and ${s.batchesPending} pending batches`)
  }
  const unexpectedSkips = batches.filter((b) => b.sync_status === "skipped" && b.skip_reason !== "no_mapping")
  if (unexpectedSkips.length > 0) failures.push(`${unexpectedSkips.length} batches skipped for another reason than no_mapping (${unexpectedSkips[0]!.skip_reason})`)
  // rows_with_drift counts rows beyond double precision (Stripe sums as doubles, see
  // SummaryTolerance.ts); drift_total may carry that rounding and is shown, not required 0.
  if (rs.rows_with_drift > 0 || rs.unavailable_pairs > 0)
    failures.push(`reconciliation: drift ${rs.drift_total} over ${rs.rows_with_drift} rows, ${rs.unavailable_pairs} pairs not checked`)
  if (emulator.state.streamErrors().length > 0) failures.push(`Stripe reported ${emulator.state.streamErrors().length} invalid meter events`)
  if (non2xx > 0) failures.push(`${non2xx} webhook deliveries were not answered 2xx`)
  if (reorderedFinalEmail !== reorderedEmail)
    failures.push(`updated-before-created: the customer's email is ${reorderedFinalEmail}, expected the update's ${reorderedEmail}`)
  if (!duplicateRecordedOnce) failures.push("the duplicated webhook delivery is not recorded exactly once in the webhook event log")
  if (emulator.state.meterEvents().length !== batches.filter((b) => b.sync_status === "synced").length)
    failures.push(
      `Stripe accepted ${emulator.state.meterEvents().length} meter events for ${batches.filter((b) => b.sync_status === "synced").length} synced batches`
    )
  return { meterSummaries, failures, pairs: { checked: pairsChecked, mismatched: pairsMismatched } }
}

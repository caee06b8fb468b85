/**
 * Exactly-once rule 3 (SyncPipeline.ts): Stripe deduplicates a meter event identifier for 24
 * hours, so a batch first sent more than FLEXPRICE_SYNC_RESEND_HORIZON_HOURS (23) ago is never
 * resent blindly. Stripe's hourly meter event summary for the batch's customer and meter is
 * compared with the ledger's batches of that hour first:
 *  - Stripe holds the synced total plus the unconfirmed batches → they arrived: mark synced;
 *  - Stripe holds exactly the synced total → they did not: clear first_sent_at, send again
 *    (except batches an operator holds or that reached the retry cap: they stay failed);
 *  - anything else → `failed` / needs_review for an operator, never retried automatically.
 */
import { Clock, Effect, Ref } from "effect"
import * as Decimal from "../domain/Decimal.js"
import type { MeterMapping } from "../repositories/MeterMappingRepo.js"
import { type BatchRow, NEEDS_REVIEW } from "../repositories/SyncBatchRepo.js"
import { isStripeError } from "../stripe/StripeErrors.js"
import { matchesDoubleSum } from "../stripe/SummaryTolerance.js"
import type { PushContext } from "./RunContext.js"
import { countBatches } from "./SyncMetrics.js"

export const HOUR_MS = 3_600_000

/** A batch whose first send is older than the resend horizon at `now` must be verified first. */
export const needsVerification = (push: PushContext, batch: BatchRow, now: number) =>
  batch.firstSentAt !== null && batch.firstSentAt.getTime() < now - push.run.deps.settings.resendHorizonHours * HOUR_MS

export interface OldBatch {
  readonly batch: BatchRow
  readonly mapping: MeterMapping
  readonly stripeCustomer: string
}

/**
 * Past Stripe's dedup horizon: compare Stripe's hourly summary with the ledger before any
 * resend. Succeeds with true when the batch is safe to send again (not delivered).
 */
export const verifyOld = Effect.fn("ResendGuard.verifyOld")(
  function* (push: PushContext, { batch, mapping, stripeCustomer }: OldBatch) {
    yield* Effect.annotateCurrentSpan({ "sync.batch": batch.id })
    const { repo, stripe } = push.run.deps
    const { counters } = push
    const hourStart = new Date(Math.floor(batch.windowStart.getTime() / HOUR_MS) * HOUR_MS)
    const hourEnd = new Date(hourStart.getTime() + HOUR_MS)
    const summaries = yield* stripe.listMeterEventSummaries(push.ref, {
      meterId: mapping.providerMeterId,
      customer: stripeCustomer,
      startTime: hourStart,
      endTime: hourEnd
    })
    const stripeTotal = Decimal.sum(summaries.map((s) => s.aggregatedValue))
    const ours = yield* repo.syncedTotalsFor(batch.customerId, batch.meterId, hourStart, hourEnd)
    const synced = Decimal.sum(ours.filter((b) => b.syncStatus === "synced").map((b) => b.sentQuantity ?? "0"))
    const uncertain = ours.filter((b) => b.syncStatus !== "synced" && b.syncStatus !== "skipped" && b.firstSentAt !== null)
    const uncertainSum = Decimal.sum(uncertain.map((b) => b.sentQuantity ?? "0"))
    const now = yield* Clock.currentTimeMillis
    // Stripe's summary is a double sum of one event per batch: compare at double precision
    // (SummaryTolerance.ts), never exact-decimal equality.
    const syncedBatches = ours.filter((b) => b.syncStatus === "synced")
    const absOf = (bs: ReadonlyArray<(typeof ours)[number]>) =>
      Decimal.sum(bs.map((b) => (Decimal.isNegative(b.sentQuantity ?? "0") ? Decimal.sub("0", b.sentQuantity ?? "0") : (b.sentQuantity ?? "0"))))
    const allDelivered = matchesDoubleSum(stripeTotal, {
      exact: Decimal.add(synced, uncertainSum),
      absTotal: absOf([...syncedBatches, ...uncertain]),
      events: syncedBatches.length + uncertain.length
    })
    const noneDelivered = matchesDoubleSum(stripeTotal, { exact: synced, absTotal: absOf(syncedBatches), events: syncedBatches.length })
    if (allDelivered) {
      yield* repo.markSynced(uncertain, new Date(now), {
        code: "verified_delivered",
        message: "confirmed against Stripe meter event summaries after the 24 h dedup horizon"
      })
      yield* countBatches("synced", uncertain.length)
      yield* Ref.update(counters, (c) => ({ ...c, synced: c.synced + uncertain.length }))
      return false
    }
    if (noneDelivered) {
      // None of them arrived. Only batches the push queue would send anyway go back to pending:
      // one an operator holds (needs_review) or one past the retry cap stays where it is.
      const cap = push.run.deps.settings.maxRetries
      const held = (b: BatchRow) => b.syncStatus === "failed" && (b.errorCode === NEEDS_REVIEW || b.retryCount >= cap)
      yield* repo.clearFirstSent(
        uncertain.filter((b) => !held(b)),
        new Date(now)
      )
      return true
    }
    yield* repo.markFailed(uncertain, new Date(now), {
      code: NEEDS_REVIEW,
      message: `Stripe reports ${stripeTotal} for ${hourStart.toISOString()}, the ledger has ${synced} synced and ${uncertainSum} unconfirmed; not resent automatically`
    })
    yield* countBatches("failed", uncertain.length)
    yield* Ref.update(counters, (c) => ({ ...c, failed: c.failed + uncertain.length }))
    return false
  },
  Effect.catchIf(isStripeError, (e) =>
    // Stripe could not answer: leave the batch as it is; the next run checks again.
    Effect.as(Effect.logWarning("could not verify an old batch against Stripe").pipe(Effect.annotateLogs({ error: e._tag })), false)
  )
)

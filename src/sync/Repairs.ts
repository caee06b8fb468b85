/**
 * Each run, before the push: batches Stripe dropped after accepting them (held `failed` by an
 * error report, src/webhooks/EventDestination.ts) go back to pending once the mapping that
 * caused the drop changed after the dropped send — a deleted Stripe customer replaced by a new
 * mapping, an archived meter replaced by another. They keep their identifier and send amount, so
 * they are sent exactly once more in this run's push. Other codes (bad value, timestamp) stay
 * failed for an operator.
 */
import { Effect, Metric } from "effect"
import * as Metrics from "../observability/Metrics.js"
import type { BatchRepairRepo } from "../repositories/BatchRepairRepo.js"
import { CUSTOMER_CODES, METER_CODES } from "../stripe/MeterErrorCodes.js"

/** A mapping change that fixed nothing cannot re-queue a batch forever. */
export const MAX_MAPPING_REQUEUES = 3

export const requeueRepaired = Effect.fn("Repairs.requeueRepaired")(function* (repairs: BatchRepairRepo, now: number) {
  const rows = yield* repairs.requeueRepaired({
    customerCodes: CUSTOMER_CODES,
    meterCodes: METER_CODES,
    maxRequeues: MAX_MAPPING_REQUEUES,
    at: new Date(now)
  })
  if (rows.length > 0) {
    yield* Metric.incrementBy(Metric.tagged(Metrics.syncBatchesRequeuedTotal, "reason", "mapping_fixed"), rows.length)
    yield* Effect.logInfo("re-queued batches Stripe had dropped, after their mapping changed").pipe(
      Effect.annotateLogs({ batches: rows.length })
    )
  }
  yield* Effect.annotateCurrentSpan({ "sync.requeued": rows.length })
  return rows.length
})

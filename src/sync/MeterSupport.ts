/**
 * Which mapped meters a run may send, and why not.
 *
 * - Formula: we send ONE meter event per (customer, meter, window) carrying the window's sum, so
 *   COUNT and SUM meters need a Stripe `sum` meter; MAX/LATEST are not aggregated here.
 * - Pre-aggregation: a Stripe meter with `event_time_window` (hour|day) keeps only the newest
 *   event per customer per hour/day (docs.stripe.com/billing/subscriptions/usage-based/
 *   recording-usage, "Event ingestion"), so a late delta would overwrite its base batch and the
 *   windows of one day would overwrite each other. Such mappings are refused by
 *   `PUT /v1/stripe/meter-mappings`; one stored before that check has its batches skipped
 *   (`pre_aggregated_meter`) and never sent.
 *
 * Stripe meters are immutable except for their display name (same page, "Configuring Meter"),
 * so a successful read is kept for the life of the process: one read per mapped meter, not one
 * per run. A meter that could not be read this run is `held`: its batches are ledgered as usual
 * but not sent until a later run has read the meter.
 */
import { Effect } from "effect"
import type { MeterMapping } from "../repositories/MeterMappingRepo.js"
import type { SkipReason } from "../repositories/SyncBatchRepo.js"
import type { StripeAccountRef, StripeClientService } from "../stripe/StripeClient.js"

export interface MeterSupport {
  /** The meter's batches may be created sendable (and revived). */
  readonly has: (meterId: string) => boolean
  /** Why a meter that is not `has` is skipped. */
  readonly skipReason: (meterId: string) => SkipReason
  /** Sendable, but its Stripe meter could not be read this run: leave its batches pending. */
  readonly held: (meterId: string) => boolean
  readonly preAggregated: ReadonlySet<string>
  /** Stripe's error code when a meter read failed this run (the run then reports `partial`). */
  readonly readError: string | null
}

/** Builds the per-run check; the cache of meter reads lives as long as the returned function. */
export const makeMeterSupport = (stripe: StripeClientService) => {
  /** provider meter id → its event_time_window (null: raw) */
  const windows = new Map<string, string | null>()

  return Effect.fn("MeterSupport.check")(function* (
    ref: StripeAccountRef | undefined,
    mappings: ReadonlyArray<MeterMapping>,
    aggregations: ReadonlyMap<string, string>
  ) {
    const formulaOk = new Set<string>()
    for (const m of mappings) {
      const t = aggregations.get(m.meterId)
      if (m.formula === "sum" && (t === "SUM" || t === "COUNT")) formulaOk.add(m.meterId)
    }
    const preAggregated = new Set<string>()
    const held = new Set<string>()
    let readError: string | null = null
    for (const m of mappings) {
      if (!formulaOk.has(m.meterId)) continue
      if (!windows.has(m.providerMeterId) && ref !== undefined) {
        const read = yield* Effect.either(stripe.retrieveMeter(ref, m.providerMeterId))
        if (read._tag === "Right") windows.set(m.providerMeterId, read.right.eventTimeWindow)
        else {
          readError ??= read.left.code
          yield* Effect.logWarning("could not read a mapped Stripe meter; its batches wait for a later run").pipe(
            Effect.annotateLogs({ provider_meter_id: m.providerMeterId, error: read.left._tag })
          )
        }
      }
      if (!windows.has(m.providerMeterId)) held.add(m.meterId)
      else if (windows.get(m.providerMeterId) !== null) preAggregated.add(m.meterId)
    }
    yield* Effect.annotateCurrentSpan({ "sync.meters_pre_aggregated": preAggregated.size, "sync.meters_held": held.size })
    return {
      has: (id) => formulaOk.has(id) && !preAggregated.has(id),
      skipReason: (id) => (preAggregated.has(id) ? "pre_aggregated_meter" : "unsupported_formula"),
      held: (id) => held.has(id),
      preAggregated,
      readError
    } satisfies MeterSupport
  })
}

/**
 * Reconciliation (SPEC §6): per customer, meter and hour, what the ledger says was synced
 * against what Stripe's meter event summaries report. `drift` = Stripe − synced, exact decimal
 * strings ("0" when equal). Stripe sums as doubles (SummaryTolerance.ts), so a row counts as
 * drifted only when the difference is beyond what double rounding of its events can explain. Pairs are those with synced batches in the range; one summaries call
 * per pair, a few at a time (the StripeClient's limiter paces them further).
 */
import { Array as Arr, Effect, Option } from "effect"
import * as Decimal from "../domain/Decimal.js"
import { CustomerMappingRepo } from "../repositories/CustomerMappingRepo.js"
import { MeterMappingRepo } from "../repositories/MeterMappingRepo.js"
import { SyncBatchRepo } from "../repositories/SyncBatchRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { matchesDoubleSum } from "../stripe/SummaryTolerance.js"

export interface ReconciliationRow {
  readonly customerId: string
  readonly stripeCustomerId: string | null
  readonly meterId: string
  readonly stripeMeterId: string | null
  readonly hour: Date
  readonly synced: string
  /** null when Stripe could not be asked for this pair */
  readonly stripe: string | null
  readonly drift: string
  /** Stripe's figure is the ledger's, up to the rounding of Stripe's double sum. */
  readonly matches: boolean
}

export interface ReconciliationReport {
  readonly from: Date
  readonly to: Date
  readonly rows: ReadonlyArray<ReconciliationRow>
  readonly summary: {
    readonly pairs: number
    readonly rows: number
    readonly rowsWithDrift: number
    readonly syncedTotal: string
    readonly stripeTotal: string
    readonly driftTotal: string
    readonly unavailablePairs: number
  }
}

const HOUR_MS = 3_600_000

export const reconcile = Effect.fn("Reconciliation.reconcile")(function* (from: Date, to: Date) {
  const repo = yield* SyncBatchRepo
  const customers = yield* CustomerMappingRepo
  const meters = yield* MeterMappingRepo
  const accounts = yield* StripeAccounts
  const stripe = yield* StripeClient
  const start = new Date(Math.floor(from.getTime() / HOUR_MS) * HOUR_MS)
  const end = new Date(Math.ceil(to.getTime() / HOUR_MS) * HOUR_MS)
  const ours = yield* repo.syncedHourly(start, end)
  const byPair = Arr.groupBy(ours, (r) => `${r.customerId}\u0000${r.meterId}`)
  const stripeCustomers = yield* customers.activeByCustomerIds([...new Set(ours.map((r) => r.customerId))])
  const mappingByMeter = new Map((yield* meters.list).map((m) => [m.meterId, m]))
  const ref = yield* accounts.refFor
  const perPair = yield* Effect.forEach(
    Object.values(byPair),
    (rows) =>
      Effect.gen(function* () {
        const { customerId, meterId } = rows[0]!
        const stripeCustomerId = stripeCustomers.get(customerId) ?? null
        const mapping = mappingByMeter.get(meterId)
        const stripeMeterId = mapping?.providerMeterId ?? null
        const summaries =
          stripeCustomerId === null || stripeMeterId === null
            ? Option.none()
            : yield* stripe
                .listMeterEventSummaries(ref, { meterId: stripeMeterId, customer: stripeCustomerId, startTime: start, endTime: end })
                .pipe(Effect.option)
        const stripeByHour = new Map<number, string>()
        if (Option.isSome(summaries))
          for (const s of summaries.value) {
            const h = Math.floor(s.startTime.getTime() / HOUR_MS) * HOUR_MS
            stripeByHour.set(h, Decimal.add(stripeByHour.get(h) ?? "0", s.aggregatedValue))
          }
        const syncedByHour = new Map(rows.map((r) => [r.hour.getTime(), r.total]))
        const ledgerByHour = new Map(rows.map((r) => [r.hour.getTime(), r]))
        const hours = [...new Set([...syncedByHour.keys(), ...stripeByHour.keys()])].sort((a, b) => a - b)
        return {
          unavailable: Option.isNone(summaries),
          rows: hours.map((h): ReconciliationRow => {
            const synced = syncedByHour.get(h) ?? "0"
            const st = Option.isSome(summaries) ? (stripeByHour.get(h) ?? "0") : null
            return {
              customerId,
              stripeCustomerId,
              meterId,
              stripeMeterId,
              hour: new Date(h),
              synced,
              stripe: st,
              drift: st === null ? Decimal.sub("0", synced) : Decimal.sub(st, synced),
              matches:
                st !== null &&
                matchesDoubleSum(st, {
                  exact: synced,
                  absTotal: ledgerByHour.get(h)?.absTotal ?? "0",
                  events: ledgerByHour.get(h)?.batches ?? 0
                })
            }
          })
        }
      }),
    { concurrency: 8 }
  )
  const rows = perPair.flatMap((p) => p.rows)
  const syncedTotal = Decimal.sum(rows.map((r) => r.synced))
  const stripeTotal = Decimal.sum(rows.map((r) => r.stripe ?? "0"))
  return {
    from: start,
    to: end,
    rows,
    summary: {
      pairs: perPair.length,
      rows: rows.length,
      rowsWithDrift: rows.filter((r) => !r.matches).length,
      syncedTotal,
      stripeTotal,
      driftTotal: Decimal.sub(stripeTotal, syncedTotal),
      unavailablePairs: perPair.filter((p) => p.unavailable).length
    }
  } satisfies ReconciliationReport
})

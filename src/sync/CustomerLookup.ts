/**
 * The run's Stripe customers, keyed by FlexPrice customer: each customer's active mapping is
 * read at most once per run, then answered from memory. The window pass asks for the customers
 * of its groups and the push for those of its pages — mostly the same customers — so a run of
 * 100,000 batches reads each mapping once instead of once per stage and page.
 *
 * A run sees a customer's mapping as of its first question about it, as it sees the meter
 * mappings as of its start (RunContext.mappingByMeter): a mapping created during the run counts
 * from the next run (batches skipped `no_mapping` are re-evaluated every run, Reevaluation.ts),
 * and one deleted during the run stops the customer's batches from the next run on — as a page
 * already read and on its way did before. Memory: one entry per customer the run touches, the
 * order of the batches the run holds anyway.
 */
import type { SqlError } from "@effect/sql"
import { Effect } from "effect"
import type { CurrentTenant } from "../domain/Tenant.js"
import type { CustomerMappingRepo } from "../repositories/CustomerMappingRepo.js"

export interface CustomerLookup {
  /** customer id → Stripe customer id, active mappings only */
  readonly activeByCustomerIds: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, string>, SqlError.SqlError, CurrentTenant>
}

/** A fresh lookup for one run (a run's stages ask one after another, never concurrently). */
export const makeCustomerLookup = (repo: CustomerMappingRepo): CustomerLookup => {
  // null: asked, and the customer has no active mapping
  const known = new Map<string, string | null>()
  return {
    activeByCustomerIds: (ids) =>
      Effect.gen(function* () {
        const missing = ids.filter((id) => !known.has(id))
        if (missing.length > 0) {
          const found = yield* repo.activeByCustomerIds(missing)
          for (const id of missing) known.set(id, found.get(id) ?? null)
        }
        const out = new Map<string, string>()
        for (const id of ids) {
          const stripe = known.get(id)
          if (stripe !== undefined && stripe !== null) out.set(id, stripe)
        }
        return out as ReadonlyMap<string, string>
      })
  }
}

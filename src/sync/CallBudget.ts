/**
 * The requirements' call budget: fewer than 100 Stripe calls an hour per tenant. Everything that
 * calls Stripe on a tenant's behalf in the background spends from it, every attempt it sends
 * (RequestCount.ts) — sync runs (meter events, stream sessions, the resend guard's summary reads)
 * and reconciliation (its summary pages) — and the trailing hour's requests per
 * tenant are exported (`flexprice_sync_stripe_requests_last_hour`) for the SyncStripeCallBudget
 * alert. The budget is watched, not enforced: usage is never held back or dropped to stay under
 * it (README "SyncStripeCallBudget").
 */
import { Clock, Effect, Metric } from "effect"
import type { TenantScope } from "../domain/Ids.js"
import * as Metrics from "../observability/Metrics.js"

const HOUR_MS = 3_600_000

type Scope = Pick<TenantScope, "tenantId" | "environmentId">

export class CallBudget extends Effect.Service<CallBudget>()("flexprice/CallBudget", {
  sync: () => {
    /** Requests per tenant with their times, pruned to the trailing hour. */
    const byTenant = new Map<string, { scope: Scope; calls: Array<[number, number]> }>()

    /** Requests in (now − 1 h, now] per tenant; tenants with none are dropped. */
    const lastHour = (now: number) => {
      const out: Array<{ scope: Scope; requests: number }> = []
      for (const [key, entry] of byTenant) {
        entry.calls = entry.calls.filter(([t]) => t > now - HOUR_MS)
        if (entry.calls.length === 0) byTenant.delete(key)
        out.push({ scope: entry.scope, requests: entry.calls.reduce((n, [, r]) => n + r, 0) })
      }
      return out
    }

    /** Sets the trailing-hour gauge: per tenant with tenant labels, else the busiest tenant. */
    const publish = Effect.gen(function* () {
      const counts = lastHour(yield* Clock.currentTimeMillis)
      if (yield* Metrics.tenantLabelsEnabled) {
        for (const c of counts)
          yield* Metric.set(Metric.taggedWithLabels(Metrics.syncStripeRequestsLastHour, yield* Metrics.tenantTags(c.scope)), c.requests)
      } else yield* Metric.set(Metrics.syncStripeRequestsLastHour, Math.max(0, ...counts.map((c) => c.requests)))
    })

    /** `requests` Stripe requests made now for `scope` (0: only the gauge moves on, as the hour passes). */
    const spend = (scope: Scope, requests: number) =>
      requests === 0
        ? publish
        : Effect.gen(function* () {
            const key = `${scope.tenantId}/${scope.environmentId}`
            const entry = byTenant.get(key) ?? { scope, calls: [] }
            entry.calls.push([yield* Clock.currentTimeMillis, requests])
            byTenant.set(key, entry)
            yield* Metric.incrementBy(Metric.taggedWithLabels(Metrics.syncStripeRequestsTotal, yield* Metrics.tenantTags(scope)), requests)
            yield* publish
          })

    return { spend, publish } as const
  }
}) {}

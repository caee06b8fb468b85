/**
 * The backstop for pending events. Events of an unknown customer wait in `pending_events` and
 * are processed when the customer is created (CustomerService) or, if the customer committed
 * while the ingest was in flight, by the ingest's own re-check. A customer created inside a
 * longer transaction (a migration page) can still commit after both looked: this sweep finds
 * pending events whose customer exists and processes them, every minute inside `serve`.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Metric, Schedule } from "effect"
import { EnvironmentId, TenantId, TenantScope } from "../domain/Ids.js"
import { asSystem } from "../db/RowSecurity.js"
import { CurrentTenant } from "../domain/Tenant.js"
import * as Metrics from "../observability/Metrics.js"
import { EventIngestor } from "./EventIngestor.js"

/** One pass over every tenant; returns how many events it processed. */
export const sweepOnce = Effect.fn("PendingSweeper.sweep")(function* () {
  const sql = yield* PgClient.PgClient
  const ingestor = yield* EventIngestor
  const ready = yield* sql<{ tenantId: string; environmentId: string; externalCustomerId: string; customerId: string }>`
    SELECT DISTINCT p.tenant_id, p.environment_id, p.external_customer_id, c.id AS customer_id
    FROM pending_events p
    JOIN customers c ON c.tenant_id = p.tenant_id AND c.environment_id = p.environment_id AND c.external_id = p.external_customer_id
    LIMIT 1000`.pipe(asSystem("the pending sweep finds work in every tenant"))
  let processed = 0
  for (const r of ready) {
    const scope = TenantScope.make({ tenantId: TenantId.make(r.tenantId), environmentId: EnvironmentId.make(r.environmentId) })
    processed += yield* ingestor.processPendingFor(r.externalCustomerId, r.customerId).pipe(Effect.provideService(CurrentTenant, scope))
  }
  const [{ n }] = (yield* sql<{ n: string }>`SELECT count(*) AS n FROM pending_events`.pipe(
    asSystem("the pending gauge counts every tenant")
  )) as unknown as [{ n: string }]
  yield* Metric.set(Metrics.pendingCustomerEvents, Number(n))
  if (processed > 0) yield* Effect.logInfo("processed pending events of existing customers", { events: processed })
  return processed
})

export const PendingSweeperLive = Layer.scopedDiscard(
  Effect.forkScoped(
    sweepOnce().pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("pending sweep failed", cause)),
      Effect.repeat(Schedule.spaced("1 minute"))
    )
  )
)

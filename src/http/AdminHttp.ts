/** Handlers of the admin group (AdminApi.ts): disconnect, customer mappings, audit log. */
import { HttpApiBuilder } from "@effect/platform"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option } from "effect"
import { Conflict, InternalError, InvalidInput, NotFound } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { CustomerMappingRepo, type CustomerMappingRow } from "../repositories/CustomerMappingRepo.js"
import { StripeConfigRepo } from "../repositories/StripeConfigRepo.js"
import { SyncBatchRepo } from "../repositories/SyncBatchRepo.js"
import { WindowGridRepo } from "../repositories/WindowGridRepo.js"
import { AuditLog } from "../security/AuditLog.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { SyncLease } from "../sync/SyncLease.js"
import { FlexPriceApi } from "./Api.js"
import { orUnavailable } from "./Errors.js"
import { iso, sourceIp, toDateOrUndefined } from "./Params.js"

const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return {}
  }
}

const mappingView = (m: CustomerMappingRow) => ({
  id: m.id,
  customer_id: m.customerId,
  provider: "stripe" as const,
  provider_customer_id: m.providerCustomerId,
  status: m.status,
  source: m.source,
  migration_id: m.migrationId,
  metadata: typeof m.metadata === "string" ? parseJson(m.metadata) : m.metadata,
  created_at: iso(m.createdAt),
  updated_at: iso(m.updatedAt)
})

const mappingNotFound = (customerId: string) =>
  new NotFound({ code: "customer_mapping_not_found", message: `customer ${customerId} has no Stripe mapping`, details: { customer_id: customerId } })

export const AdminHttpLive = HttpApiBuilder.group(FlexPriceApi, "admin", (handlers) =>
  Effect.gen(function* () {
    const configs = yield* StripeConfigRepo
    const accounts = yield* StripeAccounts
    const audit = yield* AuditLog
    const customerMappings = yield* CustomerMappingRepo
    const batches = yield* SyncBatchRepo
    const grids = yield* WindowGridRepo
    const lease = yield* SyncLease
    const sql = yield* PgClient.PgClient

    return handlers
      .handle("deleteConfig", () =>
        Effect.gen(function* () {
          const scope = yield* CurrentTenant
          // Under the sync lease: a running sync finishes first, and none starts while the row
          // goes. The window size is pinned so a later reconnect cannot re-cut ledgered windows.
          const removed = yield* lease
            .withLease(
              scope,
              sql.withTransaction(
                Effect.gen(function* () {
                  const stored = yield* configs.getStored
                  if (Option.isSome(stored)) yield* grids.pin(stored.value.aggregationWindowMinutes)
                  return yield* configs.remove
                })
              ),
              { wait: "30 seconds" }
            )
            .pipe(
              Effect.catchTags({
                LeaseBusy: () => Effect.fail(Conflict.of("sync_in_progress", "a sync of this environment is running; retry shortly")),
                LeaseLost: () => Effect.fail(InternalError.of("sync_interrupted", "the disconnect lost the sync lease; retry"))
              })
            )
          if (Option.isNone(removed))
            return yield* new NotFound({ code: "stripe_not_configured", message: "Stripe is not configured for this environment" })
          yield* accounts.invalidate(scope)
          const counts = yield* batches.statusCounts
          const unsynced = counts.filter((c) => c.status === "pending" || c.status === "sending" || c.status === "failed").reduce((n, c) => n + c.count, 0)
          yield* audit.record({
            action: "config.delete",
            actor: "api",
            target: "stripe_config",
            sourceIp: yield* sourceIp,
            details: { stripe_account_id: removed.value.stripeAccountId, livemode: removed.value.livemode, unsynced_batches: unsynced }
          })
          return { disconnected: true as const, stripe_account_id: removed.value.stripeAccountId, unsynced_batches: unsynced }
        }).pipe(orUnavailable)
      )
      .handle("getCustomerMapping", ({ path }) =>
        Effect.flatMap(customerMappings.findByCustomerId(path.customer_id), (m) =>
          Option.isNone(m) ? Effect.fail(mappingNotFound(path.customer_id)) : Effect.succeed(mappingView(m.value))
        ).pipe(orUnavailable)
      )
      .handle("deleteCustomerMapping", ({ path }) =>
        Effect.gen(function* () {
          const changed = yield* customerMappings.markDeletedByCustomerId(path.customer_id)
          if (Option.isNone(changed)) return yield* mappingNotFound(path.customer_id)
          yield* audit.record({
            action: "customer_mapping.delete",
            actor: "api",
            target: `customer:${path.customer_id}`,
            sourceIp: yield* sourceIp,
            details: { provider_customer_id: changed.value.providerCustomerId }
          })
          return mappingView(changed.value)
        }).pipe(orUnavailable)
      )
      .handle("listAuditLog", ({ urlParams }) =>
        Effect.gen(function* () {
          const limit = urlParams.limit ?? 100
          const from = toDateOrUndefined(urlParams.from)
          const to = toDateOrUndefined(urlParams.to)
          if (from && to && to.getTime() <= from.getTime()) return yield* InvalidInput.of("invalid_range", "to must be after from")
          const before = urlParams.cursor === undefined ? undefined : { position: urlParams.cursor.key, id: urlParams.cursor.id }
          const rows = yield* audit.query({ action: urlParams.action, from, to, limit: limit + 1, before })
          const page = rows.slice(0, limit)
          return {
            entries: page.map((r) => ({
              id: r.id,
              action: r.action,
              actor: r.actor,
              target: r.target,
              source_ip: r.sourceIp,
              details: parseJson(r.details),
              created_at: iso(r.createdAt)
            })),
            next_cursor: rows.length > limit ? { key: page[page.length - 1]!.position, id: page[page.length - 1]!.id } : null
          }
        }).pipe(orUnavailable)
      )
  })
)

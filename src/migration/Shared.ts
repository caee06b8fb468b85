/** What the chunked migration work (jobs, CSV imports, rollbacks, verifications) shares. */
import type { SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Schedule } from "effect"
import { CustomerLinker } from "../customers/CustomerLinker.js"
import type { EventStoreError } from "../events/EventStore.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { isStripeError } from "../stripe/StripeErrors.js"
import { MigrationRunnerConfig } from "./Config.js"
import { JobGate } from "./JobGate.js"

/** What a job that links customers chunk by chunk (Stripe migration, CSV import) is built from. */
export const linkingJobServices = Effect.all({
  sql: PgClient.PgClient,
  repo: MigrationJobRepo,
  linker: CustomerLinker,
  accounts: StripeAccounts,
  stripe: StripeClient,
  watermark: IngestWatermark,
  gate: JobGate,
  config: MigrationRunnerConfig
})

/** Another process took the job or task over (this one stopped heartbeating in time). */
export class LostClaim {
  readonly _tag = "LostClaim"
}

/** A chunk (page, rows, entities) that met a database error is retried whole: it rolled back. */
export const CHUNK_RETRY = Schedule.exponential("200 millis").pipe(Schedule.intersect(Schedule.recurs(4)))

/**
 * When a job that links rows chunk after chunk refreshes planner statistics
 * (MigrationJobRepo.refreshStatistics): before its first chunk, then each time the rows it applied
 * pass 1,000 and double. Embedded PGlite runs no autovacuum, and the chunk's lookups are only
 * planned as index lookups with statistics: without them a tenant that already holds many rows
 * (webhooks, an earlier import) would have every chunk read all its mappings. Answers, for the
 * rows applied so far, whether to refresh now.
 */
export const statisticsSchedule = () => {
  let next = 0
  return (applied: number): boolean => {
    if (applied < next) return false
    next = Math.max(1000, applied * 2)
    return true
  }
}

export const isInfraError = (e: unknown): e is SqlError.SqlError | EventStoreError =>
  typeof e === "object" && e !== null && "_tag" in e && (e._tag === "SqlError" || e._tag === "EventStoreError")

export const describeError = (e: unknown): string => {
  if (isStripeError(e)) return `${e.code}: ${e.message}`
  if (typeof e === "object" && e !== null && "code" in e && "message" in e) return `${String(e.code)}: ${String(e.message)}`
  if (typeof e === "object" && e !== null && "_tag" in e) return String((e as { _tag: unknown })._tag) + (e instanceof Error ? `: ${e.message}` : "")
  return String(e)
}

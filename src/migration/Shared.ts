/** What the chunked migration work (jobs, CSV imports, rollbacks, verifications) shares. */
import type { SqlError } from "@effect/sql"
import { Schedule } from "effect"
import type { EventStoreError } from "../events/EventStore.js"
import { isStripeError } from "../stripe/StripeErrors.js"

/** Another process took the job or task over (this one stopped heartbeating in time). */
export class LostClaim {
  readonly _tag = "LostClaim"
}

/** A chunk (page, rows, entities) that met a database error is retried whole: it rolled back. */
export const CHUNK_RETRY = Schedule.exponential("200 millis").pipe(Schedule.intersect(Schedule.recurs(4)))

export const isInfraError = (e: unknown): e is SqlError.SqlError | EventStoreError =>
  typeof e === "object" && e !== null && "_tag" in e && (e._tag === "SqlError" || e._tag === "EventStoreError")

export const describeError = (e: unknown): string => {
  if (isStripeError(e)) return `${e.code}: ${e.message}`
  if (typeof e === "object" && e !== null && "code" in e && "message" in e) return `${String(e.code)}: ${String(e.message)}`
  if (typeof e === "object" && e !== null && "_tag" in e) return String((e as { _tag: unknown })._tag) + (e instanceof Error ? `: ${e.message}` : "")
  return String(e)
}

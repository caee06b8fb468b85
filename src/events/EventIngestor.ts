/**
 * Ingestion: validate raw events, store them durably, and turn each into processed rows for the
 * meters it matches. Events of customers that do not exist yet are kept in `pending_events`
 * and processed by `processPendingFor` when the customer appears (API, webhook, migration).
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Metric, Option } from "effect"
import { DatabaseConfig, IngestConfig } from "../config/AppConfig.js"
import { textArray } from "../db/SqlArrays.js"
import { CurrentTenant } from "../domain/Tenant.js"
import type { TenantScope } from "../domain/Ids.js"
import { isJsonObject, stringifyJson, parseJson } from "../domain/Json.js"
import type { IngestRejection, IngestResult } from "../domain/Models.js"
import { CustomerRepo } from "../repositories/CustomerRepo.js"
import { MeterRepo } from "../repositories/MeterRepo.js"
import { EventStore, type EventStatus, type ProcessedEvent, type IngestStamp, type ResolvingBatch, type StoredEvent } from "./EventStore.js"
import { IngestWatermark, TENANT_INGEST_LOCK_CLASS, tenantLockName } from "./IngestWatermark.js"
import * as Metrics from "../observability/Metrics.js"
import { meterQuantities, type Metered, processedRows, processEvent, validateEvent, type ValidEvent } from "./EventValidation.js"

export { MAX_EVENT_TIME, MIN_EVENT_TIME, outOfRangeNumber, processEvent, validateEvent } from "./EventValidation.js"

/** A valid event whose quantities every column can hold, metered once for the write. */
interface Storable {
  readonly event: ValidEvent
  readonly metered: Metered
}

export class EventIngestor extends Effect.Service<EventIngestor>()("flexprice/EventIngestor", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const store = yield* EventStore
    const customers = yield* CustomerRepo
    const meterRepo = yield* MeterRepo
    const watermark = yield* IngestWatermark
    const maxFutureMs = (yield* IngestConfig).maxFutureSeconds * 1000

    const serverMode = Option.isSome((yield* DatabaseConfig).url)

    /**
     * Postgres backend: one transaction. ClickHouse: processed rows first (deduplicated at ingest,
     * see clickhouse/FirstCopy.ts), then events. Its check + insert must not race for one tenant:
     * the store serialises them in this process (all of embedded mode); on a PostgreSQL server,
     * where replicas ingest side by side, a per-tenant advisory lock held until the stamped
     * transaction ends serialises them across processes (and is released if the process dies).
     */
    const atomically = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      store.backend === "postgres"
        ? inTransaction(effect)
        : serverMode
          ? sql.withTransaction(
              Effect.zipRight(
                Effect.flatMap(
                  CurrentTenant,
                  (t) => sql`SELECT pg_advisory_xact_lock(${TENANT_INGEST_LOCK_CLASS}, hashtext(${tenantLockName(t)}))`
                ),
                effect
              )
            )
          : effect

    /**
     * `effect` in the caller's transaction (server mode: the watermark's stamped transaction) or a
     * new one. A nested withTransaction would add a savepoint: two round trips that protect
     * nothing here, since any failure fails the whole ingest.
     */
    const inTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (tx) => (Option.isSome(tx) ? effect : sql.withTransaction(effect)))

    const storePending = (rows: ReadonlyArray<StoredEvent>) =>
      rows.length === 0
        ? Effect.void
        : sql`INSERT INTO pending_events ${sql.insert(
            rows.map((e) => ({
              tenantId: e.tenantId,
              environmentId: e.environmentId,
              eventId: e.eventId,
              externalCustomerId: e.externalCustomerId,
              eventName: e.eventName,
              timestamp: e.timestamp,
              ingestedAt: e.ingestedAt,
              properties: e.propertiesJson
            }))
          )} ON CONFLICT DO NOTHING`

    /**
     * The relational store's write: customers are resolved inside the one insert statement (no
     * lookup round trip), which alone is atomic and on a server takes its own stamp
     * (IngestWatermark.stampedByStatement), so it needs no transaction. Returns the status of
     * each event stored now.
     */
    const writeResolving = (
      ingestResolving: NonNullable<EventStore["Type"]["ingestResolving"]>,
      scope: TenantScope,
      stamp: IngestStamp,
      storable: ReadonlyArray<Storable>
    ) => {
      const events: Array<ResolvingBatch["events"][number]> = []
      const processed: Array<ResolvingBatch["processed"][number]> = []
      for (const { event: e, metered: p } of storable) {
        // customer id and stamp are the statement's; the rows are kept only with a customer
        for (const q of p.quantities) processed.push({ eventId: e.eventId, meterId: q.meterId, qty: q.qty })
        events.push({
          eventId: e.eventId,
          eventName: e.eventName,
          externalCustomerId: e.externalCustomerId,
          timestamp: e.timestamp,
          propertiesJson: stringifyJson(e.properties),
          error: p.error
        })
      }
      const errorOf = new Map(events.map((e) => [e.eventId, e.error]))
      return Effect.map(
        ingestResolving({ scope, stamp, events, processed }),
        (rows) =>
          new Map(rows.map((r): [string, EventStatus] => [r.eventId, r.customerId === null ? "pending" : errorOf.get(r.eventId) ? "error" : "processed"]))
      )
    }

    /**
     * A store without `ingestResolving` (ClickHouse): customer ids looked up first, processed
     * rows first (deduplicated at ingest, see clickhouse/FirstCopy.ts), then events, then pending.
     */
    const writeLookingUp = (scope: TenantScope, ingestedAt: Date, storable: ReadonlyArray<Storable>) =>
      Effect.gen(function* () {
        const customerIds = yield* customers.idsByExternalIds([...new Set(storable.map((s) => s.event.externalCustomerId))])
        const events: Array<StoredEvent> = []
        const processed: Array<ProcessedEvent> = []
        for (const { event: e, metered } of storable) {
          const customerId = customerIds.get(e.externalCustomerId) ?? null
          let status: EventStatus = "pending"
          let error: string | null = null
          if (customerId !== null) {
            processed.push(...processedRows(e, metered, { scope, customerId, ingestedAt }))
            error = metered.error
            status = error ? "error" : "processed"
          }
          events.push({
            tenantId: scope.tenantId,
            environmentId: scope.environmentId,
            eventId: e.eventId,
            eventName: e.eventName,
            externalCustomerId: e.externalCustomerId,
            customerId,
            timestamp: e.timestamp,
            ingestedAt,
            propertiesJson: stringifyJson(e.properties),
            status,
            error
          })
        }
        const ids = yield* atomically(
          Effect.gen(function* () {
            yield* store.insertProcessed(processed)
            const ids = new Set(yield* store.insertEvents(events))
            yield* storePending(events.filter((e) => e.status === "pending" && ids.has(e.eventId)))
            return ids
          })
        )
        return new Map(events.filter((e) => ids.has(e.eventId)).map((e): [string, EventStatus] => [e.eventId, e.status]))
      })

    /** Ingest parsed raw events (numbers as JsonNumber). Returns what was accepted/rejected by index. */
    const ingest = Effect.fn("EventIngestor.ingest")(function* (raws: ReadonlyArray<unknown>) {
      const scope = yield* CurrentTenant
      yield* Effect.annotateCurrentSpan({ "events.count": raws.length, tenant_id: scope.tenantId })
      const ingestResolving = store.ingestResolving
      const body = (now: Date, stamp: IngestStamp) =>
        Effect.gen(function* () {
          const rejected: Array<IngestRejection> = []
          const valid: Array<ValidEvent> = []
          const seen = new Set<string>()
          let duplicates = 0
          raws.forEach((raw, i) => {
            const v = validateEvent(raw, i, now, maxFutureMs)
            if (v._tag === "Rejected") rejected.push(v.rejection)
            else if (seen.has(v.event.eventId)) duplicates++
            else {
              seen.add(v.event.eventId)
              valid.push(v.event)
            }
          })
          if (valid.length === 0) return { accepted: 0, duplicates, rejected, event_ids: [], pendingExternalIds: [] as Array<string> }
          const meters = yield* meterRepo.listForIngest
          // A quantity the numeric(38,12) column cannot hold is refused now, whether or not the
          // customer exists yet, rather than stored as an event that can never be billed.
          const storable: Array<Storable> = []
          for (const event of valid) {
            const metered = meterQuantities(meters, event)
            if (metered.outOfRange === null) storable.push({ event, metered })
            else rejected.push({ index: event.index, event_id: event.eventId, code: "quantity_out_of_range", reason: metered.outOfRange })
          }
          rejected.sort((a, b) => a.index - b.index)
          const written = yield* (ingestResolving !== undefined
            ? writeResolving(ingestResolving, scope, stamp, storable)
            : writeLookingUp(scope, now, storable))
          const accepted = storable.filter((s) => written.has(s.event.eventId)).map((s) => s.event)
          const errors = accepted.filter((e) => written.get(e.eventId) === "error").length
          if (errors > 0) yield* Metric.incrementBy(Metrics.eventProcessingErrorsTotal, errors)
          return {
            accepted: accepted.length,
            duplicates: duplicates + (storable.length - accepted.length),
            rejected,
            event_ids: accepted.map((e) => e.eventId),
            pendingExternalIds: [...new Set(accepted.filter((e) => written.get(e.eventId) === "pending").map((e) => e.externalCustomerId))]
          }
        })
      const result = yield* (ingestResolving !== undefined
        ? watermark.stampedByStatement(body)
        : watermark.stamped((at) => body(at, { _tag: "At", at })))
      yield* Metric.incrementBy(Metrics.eventsAcceptedTotal, result.accepted)
      yield* Metric.incrementBy(Metrics.eventsRejectedTotal, result.rejected.length)
      // A customer created while this batch was in flight ran its pending pass before our rows
      // existed: look again so no event stays pending next to an existing customer.
      if (result.pendingExternalIds.length > 0) {
        const now = yield* customers.idsByExternalIds(result.pendingExternalIds)
        for (const [externalId, customerId] of now) yield* processPendingFor(externalId, customerId)
      }
      const { pendingExternalIds: _, ...answer } = result
      return answer satisfies IngestResult
    })

    /** Process every pending event of a customer that now exists. Idempotent. */
    const processPendingFor = (externalCustomerId: string, customerId: string) =>
      processPendingForMany([{ externalId: externalCustomerId, customerId }])

    /**
     * Process every pending event of customers that now exist, in one pass for all of them
     * (a page of migrated customers). Idempotent.
     */
    const processPendingForMany = Effect.fn("EventIngestor.processPendingForMany")(function* (
      customers: ReadonlyArray<{ readonly externalId: string; readonly customerId: string }>
    ) {
      if (customers.length === 0) return 0
      const scope = yield* CurrentTenant
      const customerIdOf = new Map(customers.map((c) => [c.externalId, c.customerId]))
      const externalIds = textArray([...customerIdOf.keys()])
      // Most customers have nothing pending: answer that with one indexed read instead of a
      // stamped transaction. (A pending row committed right after this read is picked up by the
      // ingest's own re-check, or by the PendingSweeper within a minute.)
      const any = yield* sql`SELECT 1 FROM pending_events WHERE tenant_id = ${scope.tenantId}
        AND environment_id = ${scope.environmentId} AND external_customer_id = ANY(${externalIds}::text[]) LIMIT 1`
      if (any.length === 0) return 0
      let total = 0
      for (;;) {
        const done = yield* watermark.stamped((ingestedAt) =>
          atomically(
            Effect.gen(function* () {
              const rows = yield* sql<{
                eventId: string
                externalCustomerId: string
                eventName: string
                timestamp: Date
                properties: string
              }>`SELECT event_id, external_customer_id, event_name, "timestamp", properties::text AS properties FROM pending_events
                WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
                  AND external_customer_id = ANY(${externalIds}::text[])
                ORDER BY event_id LIMIT 1000`
              if (rows.length === 0) return 0
              const meters = yield* meterRepo.listForIngest
              const updates: Array<{ eventId: string; customerId: string; status: EventStatus; error: string | null }> = []
              const processed: Array<ProcessedEvent> = []
              for (const r of rows) {
                const customerId = customerIdOf.get(r.externalCustomerId)!
                const properties = parseJson(r.properties)
                const p = processEvent(
                  meters,
                  { eventId: r.eventId, eventName: r.eventName, timestamp: new Date(r.timestamp), properties: isJsonObject(properties) ? properties : {} },
                  { scope, customerId, ingestedAt }
                )
                processed.push(...p.rows)
                updates.push({ eventId: r.eventId, customerId, status: p.error ? "error" : "processed", error: p.error })
              }
              yield* store.insertProcessed(processed)
              yield* store.updateEventStatus(scope, updates)
              yield* sql`DELETE FROM pending_events WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
                AND event_id IN ${sql.in(rows.map((r) => r.eventId))}`
              return rows.length
            })
          )
        )
        total += done
        if (done < 1000) break
      }
      return total
    })

    const pendingCount = Effect.flatMap(CurrentTenant, (t) =>
      sql<{ n: string }>`SELECT count(*) AS n FROM pending_events WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}`
    ).pipe(Effect.map((rows) => Number(rows[0]?.n ?? 0)))

    return { ingest, processPendingFor, processPendingForMany, pendingCount } as const
  }),
  dependencies: [CustomerRepo.Default, MeterRepo.Default, IngestWatermark.Default]
}) {}


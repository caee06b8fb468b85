/**
 * Rollbacks and verifications of a migration (`migration_tasks`), run in the background in
 * chunks: each chunk saves the task's cursor, progress and heartbeat in the transaction of its
 * writes, conditional on still owning the task, so a task resumed after a crash starts exactly
 * after the last committed chunk. Also the keyset-paged reads those chunks walk.
 *
 * JSON columns are read as text and parsed here (the client would camelCase their keys).
 */
import type { SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Data, Effect, Option } from "effect"
import { randomToken } from "../domain/Ids.js"
import { asSystem } from "../db/RowSecurity.js"
import { CurrentTenant } from "../domain/Tenant.js"
import type { MigrationTask, TaskKind } from "../migration/Model.js"
import type { MappingSnapshot } from "./MigrationJobRepo.js"

/** A task of this kind is already running for the migration. */
export class TaskAlreadyRunning extends Data.TaggedError("TaskAlreadyRunning")<{ readonly runningId: string }> {}

/** A task as read: its JSON column as text. */
interface TaskRow extends Omit<MigrationTask, "result"> {
  readonly resultJson: string
}

const toTask = (r: TaskRow): MigrationTask => ({
  ...r,
  result: JSON.parse(r.resultJson) as MigrationTask["result"],
  startedAt: new Date(r.startedAt),
  finishedAt: r.finishedAt === null ? null : new Date(r.finishedAt),
  heartbeatAt: new Date(r.heartbeatAt)
})

export interface TaskProgress {
  readonly cursor: string | null
  readonly done: number
  readonly result: MigrationTask["result"]
}

export interface MigrationMappingView {
  readonly mappingId: string
  readonly customerId: string
  readonly externalId: string | null
  readonly providerCustomerId: string | null
  readonly status: string | null
  /** False when the row is gone or no longer carries this migration's id. */
  readonly stillOurs: boolean
}

export class MigrationTaskRepo extends Effect.Service<MigrationTaskRepo>()("flexprice/MigrationTaskRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, tenant_id, environment_id, migration_id, kind, status, cursor, done, total, result::text AS result_json,
      error, started_at, finished_at, heartbeat_at, claimed_by`
    const isUniqueViolation = (e: SqlError.SqlError) => (e.cause as { code?: string } | undefined)?.code === "23505"

    const latest = (migrationId: string, kind: TaskKind) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<TaskRow>`SELECT ${cols} FROM migration_tasks
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND migration_id = ${migrationId} AND kind = ${kind}
          ORDER BY started_at DESC, id DESC LIMIT 1`
      ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toTask)))

    /** Insert a running task; TaskAlreadyRunning when one of its kind runs for the migration. */
    const create = (input: { readonly migrationId: string; readonly kind: TaskKind; readonly total: number; readonly claimedBy: string }) =>
      Effect.gen(function* () {
        const t = yield* CurrentTenant
        const inserted = yield* sql<TaskRow>`INSERT INTO migration_tasks ${sql.insert({
          id: `mtk_${randomToken()}`,
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          migrationId: input.migrationId,
          kind: input.kind,
          status: "running",
          total: input.total,
          claimedBy: input.claimedBy
        })} RETURNING ${cols}`.pipe(
          Effect.map((rows) => Option.some(toTask(rows[0]!))),
          Effect.catchIf(isUniqueViolation, () => Effect.succeed(Option.none<MigrationTask>()))
        )
        if (Option.isSome(inserted)) return inserted.value
        const running = yield* latest(input.migrationId, input.kind)
        return yield* new TaskAlreadyRunning({ runningId: Option.match(running, { onNone: () => "unknown", onSome: (j) => j.id }) })
      })

    const get = (id: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<TaskRow>`SELECT ${cols} FROM migration_tasks WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}`
      ).pipe(Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toTask)))

    /** After a chunk, in its transaction: false when this process no longer owns the task. */
    const saveProgress = (id: string, owner: string, p: TaskProgress) =>
      sql`UPDATE migration_tasks SET cursor = ${p.cursor}, done = ${p.done}, result = ${JSON.stringify(p.result)}::jsonb, heartbeat_at = now()
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    const heartbeat = (id: string, owner: string) =>
      sql`UPDATE migration_tasks SET heartbeat_at = now() WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(
        Effect.map((rows) => rows.length > 0)
      )

    const finish = (id: string, owner: string, status: "completed" | "failed", error: string | null, p: TaskProgress) =>
      sql`UPDATE migration_tasks SET status = ${status}, error = ${error}, cursor = ${p.cursor}, done = ${p.done},
            result = ${JSON.stringify(p.result)}::jsonb, finished_at = now(), heartbeat_at = now(), claimed_by = NULL
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    const release = (id: string, owner: string) =>
      sql`UPDATE migration_tasks SET claimed_by = NULL WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner}`.pipe(Effect.asVoid)

    /** Every tenant: claim running tasks released by a stop or whose owner stopped heartbeating. */
    const claimOrphans = (owner: string, staleSeconds: number) =>
      sql<TaskRow>`UPDATE migration_tasks SET claimed_by = ${owner}, heartbeat_at = now()
          WHERE status = 'running' AND claimed_by IS DISTINCT FROM ${owner}
            AND (claimed_by IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleSeconds}))
          RETURNING ${cols}`.pipe(
        Effect.map((rows) => rows.map(toTask)),
        asSystem("the migration runner's scan of every tenant")
      )

    // ------------------------------------------------------------------ what a migration made, by pages

    const countEntities = (migrationId: string) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ customers: string; mappings: string; replaced: string }>`SELECT
            (SELECT count(*) FROM migration_created_entities WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND migration_id = ${migrationId} AND entity_type = 'customer') AS customers,
            (SELECT count(*) FROM migration_created_entities WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND migration_id = ${migrationId} AND entity_type = 'mapping') AS mappings,
            (SELECT count(*) FROM migration_replaced_mappings WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND migration_id = ${migrationId}) AS replaced`
      ).pipe(Effect.map((rows) => ({ customers: Number(rows[0]!.customers), mappings: Number(rows[0]!.mappings), replaced: Number(rows[0]!.replaced) })))

    /** Ids of created entities of one type after `after`, in id order. */
    const entitiesPage = (migrationId: string, type: "customer" | "mapping", after: string, limit: number) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ entityId: string }>`SELECT entity_id FROM migration_created_entities
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND migration_id = ${migrationId}
            AND entity_type = ${type} AND entity_id > ${after}
          ORDER BY entity_id LIMIT ${limit}`
      ).pipe(Effect.map((rows) => rows.map((r) => r.entityId)))

    const replacedPage = (migrationId: string, after: string, limit: number) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<{ mappingId: string; snapshotJson: string }>`SELECT mapping_id, snapshot::text AS snapshot_json FROM migration_replaced_mappings
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND migration_id = ${migrationId} AND mapping_id > ${after}
          ORDER BY mapping_id LIMIT ${limit}`
      ).pipe(Effect.map((rows) => rows.map((r) => ({ mappingId: r.mappingId, snapshot: JSON.parse(r.snapshotJson) as MappingSnapshot }))))

    /** The mappings this migration wrote after `after`, as they are now (for verify). */
    const mappingsPage = (migrationId: string, after: string, limit: number) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql<MigrationMappingView>`SELECT e.entity_id AS mapping_id, m.customer_id, c.external_id, m.provider_customer_id, m.status,
            (m.id IS NOT NULL AND m.migration_id = ${migrationId}) AS still_ours
          FROM migration_created_entities e
          LEFT JOIN customer_integration_mappings m ON m.id = e.entity_id AND m.tenant_id = e.tenant_id AND m.environment_id = e.environment_id
          LEFT JOIN customers c ON c.id = m.customer_id AND c.tenant_id = m.tenant_id AND c.environment_id = m.environment_id
          WHERE e.tenant_id = ${t.tenantId} AND e.environment_id = ${t.environmentId} AND e.migration_id = ${migrationId}
            AND e.entity_type = 'mapping' AND e.entity_id > ${after}
          ORDER BY e.entity_id LIMIT ${limit}`
      ).pipe(Effect.map((rows) => rows.map((r) => ({ ...r, customerId: r.customerId ?? "", stillOurs: r.stillOurs === true }))))

    /** External ids of these customers (those that still exist). */
    const customersByIds = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed([] as ReadonlyArray<{ id: string; externalId: string }>)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ id: string; externalId: string }>`SELECT id, external_id FROM customers
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id IN ${sql.in(ids)} ORDER BY id`
          )

    const removeCustomers = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(0)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`DELETE FROM customers WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id IN ${sql.in(ids)} RETURNING id`
          ).pipe(Effect.map((rows) => rows.length))

    return { customersByIds, removeCustomers, create, get, latest, saveProgress, heartbeat, finish, release, claimOrphans, countEntities, entitiesPage, replacedPage, mappingsPage } as const
  })
}) {}

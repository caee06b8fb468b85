/**
 * Rollbacks and verifications of a migration (`migration_tasks`), run in the background in
 * chunks: each chunk saves the task's cursor, progress and heartbeat in the transaction of its
 * writes, conditional on still owning the task, so a task resumed after a crash starts exactly
 * after the last committed chunk. Also the keyset-paged reads those chunks walk.
 *
 * JSON columns are read as text and parsed here (the client would camelCase their keys).
 */
import { type SqlError, SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Data, Effect, Option, Schema } from "effect"
import { DbDate, DbInt, orDieOnRow } from "../db/Rows.js"
import { randomToken } from "../domain/Ids.js"
import { asSystem } from "../db/RowSecurity.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { type MigrationTask, type TaskKind, TaskResult } from "../migration/Model.js"
import { MappingSnapshotSchema } from "./MigrationJobRows.js"

/** A task of this kind is already running for the migration. */
export class TaskAlreadyRunning extends Data.TaggedError("TaskAlreadyRunning")<{ readonly runningId: string }> {}

/** A task as read: its JSON column as text, the result decoded by the Schema it was written from (TaskProgress.result). */
const TaskRowSchema = Schema.Struct({
  id: Schema.String,
  tenantId: Schema.String,
  environmentId: Schema.String,
  migrationId: Schema.String,
  kind: Schema.Literal("rollback", "verify"),
  status: Schema.Literal("running", "completed", "failed"),
  cursor: Schema.NullOr(Schema.String),
  done: DbInt,
  total: DbInt,
  resultJson: Schema.parseJson(TaskResult),
  error: Schema.NullOr(Schema.String),
  startedAt: DbDate,
  finishedAt: Schema.NullOr(DbDate),
  heartbeatAt: DbDate,
  claimedBy: Schema.NullOr(Schema.String)
})
const decodeTasks = Schema.decodeUnknown(Schema.Array(TaskRowSchema))

const toTask = ({ resultJson, ...r }: typeof TaskRowSchema.Type): MigrationTask => ({ ...r, result: resultJson })

/** Tasks a statement returned (a write's RETURNING rows), decoded. */
const tasksOf = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<MigrationTask>> =>
  Effect.map(Effect.orDie(decodeTasks(rows)), (decoded) => decoded.map(toTask))

/** A page of verify: a created mapping as it is now (the joins find nothing once it is gone). */
const MappingViewRow = Schema.Struct({
  mappingId: Schema.String,
  customerId: Schema.NullOr(Schema.String),
  externalId: Schema.NullOr(Schema.String),
  providerCustomerId: Schema.NullOr(Schema.String),
  status: Schema.NullOr(Schema.String),
  stillOurs: Schema.NullOr(Schema.Boolean)
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

    const latestRow = SqlSchema.findOne({
      Request: Schema.Struct({ migrationId: Schema.String, kind: Schema.Literal("rollback", "verify") }),
      Result: TaskRowSchema,
      execute: ({ migrationId, kind }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM migration_tasks
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND migration_id = ${migrationId} AND kind = ${kind}
            ORDER BY started_at DESC, id DESC LIMIT 1`
        )
    })
    const latest = (migrationId: string, kind: TaskKind): Effect.Effect<Option.Option<MigrationTask>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(latestRow({ migrationId, kind })).pipe(Effect.map(Option.map(toTask)))

    /** Insert a running task; TaskAlreadyRunning when one of its kind runs for the migration. */
    const create = (input: { readonly migrationId: string; readonly kind: TaskKind; readonly total: number; readonly claimedBy: string }) =>
      Effect.gen(function* () {
        const t = yield* CurrentTenant
        const inserted = yield* sql`INSERT INTO migration_tasks ${sql.insert({
          id: `mtk_${randomToken()}`,
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          migrationId: input.migrationId,
          kind: input.kind,
          status: "running",
          total: input.total,
          claimedBy: input.claimedBy
        })} RETURNING ${cols}`.pipe(
          Effect.flatMap(tasksOf),
          Effect.map((tasks) => Option.fromNullable(tasks[0])),
          Effect.catchIf(isUniqueViolation, () => Effect.succeed(Option.none<MigrationTask>()))
        )
        if (Option.isSome(inserted)) return inserted.value
        const running = yield* latest(input.migrationId, input.kind)
        return yield* new TaskAlreadyRunning({ runningId: Option.match(running, { onNone: () => "unknown", onSome: (j) => j.id }) })
      })

    const getRow = SqlSchema.findOne({
      Request: Schema.String,
      Result: TaskRowSchema,
      execute: (id) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM migration_tasks WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}`
        )
    })
    const get = (id: string): Effect.Effect<Option.Option<MigrationTask>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(getRow(id)).pipe(Effect.map(Option.map(toTask)))

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
      sql`UPDATE migration_tasks SET claimed_by = ${owner}, heartbeat_at = now()
          WHERE status = 'running' AND claimed_by IS DISTINCT FROM ${owner}
            AND (claimed_by IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleSeconds}))
          RETURNING ${cols}`.pipe(
        Effect.flatMap(tasksOf),
        asSystem("the migration runner's scan of every tenant")
      )

    // ------------------------------------------------------------------ what a migration made, by pages

    const counts = SqlSchema.single({
      Request: Schema.String,
      Result: Schema.Struct({ customers: DbInt, mappings: DbInt, replaced: DbInt }),
      execute: (migrationId) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT
              (SELECT count(*) FROM migration_created_entities WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND migration_id = ${migrationId} AND entity_type = 'customer') AS customers,
              (SELECT count(*) FROM migration_created_entities WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND migration_id = ${migrationId} AND entity_type = 'mapping') AS mappings,
              (SELECT count(*) FROM migration_replaced_mappings WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND migration_id = ${migrationId}) AS replaced`
        )
    })
    /** One row always (three counts); a missing row would be a defect like an undecodable one. */
    const countEntities = (migrationId: string): Effect.Effect<{ readonly customers: number; readonly mappings: number; readonly replaced: number }, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(counts(migrationId)).pipe(Effect.catchTag("NoSuchElementException", Effect.die))

    const PageRequest = Schema.Struct({ migrationId: Schema.String, after: Schema.String, limit: Schema.Int })

    const entityRows = SqlSchema.findAll({
      Request: Schema.Struct({ ...PageRequest.fields, type: Schema.Literal("customer", "mapping") }),
      Result: Schema.Struct({ entityId: Schema.String }),
      execute: ({ migrationId, type, after, limit }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT entity_id FROM migration_created_entities
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND migration_id = ${migrationId}
              AND entity_type = ${type} AND entity_id > ${after}
            ORDER BY entity_id LIMIT ${limit}`
        )
    })
    /** Ids of created entities of one type after `after`, in id order. */
    const entitiesPage = (migrationId: string, type: "customer" | "mapping", after: string, limit: number) =>
      orDieOnRow(entityRows({ migrationId, type, after, limit })).pipe(Effect.map((rows) => rows.map((r) => r.entityId)))

    const replacedRows = SqlSchema.findAll({
      Request: PageRequest,
      Result: Schema.Struct({ mappingId: Schema.String, snapshotJson: Schema.parseJson(MappingSnapshotSchema) }),
      execute: ({ migrationId, after, limit }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT mapping_id, snapshot::text AS snapshot_json FROM migration_replaced_mappings
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND migration_id = ${migrationId} AND mapping_id > ${after}
            ORDER BY mapping_id LIMIT ${limit}`
        )
    })
    const replacedPage = (migrationId: string, after: string, limit: number) =>
      orDieOnRow(replacedRows({ migrationId, after, limit })).pipe(
        Effect.map((rows) => rows.map((r) => ({ mappingId: r.mappingId, snapshot: r.snapshotJson })))
      )

    const mappingRows = SqlSchema.findAll({
      Request: PageRequest,
      Result: MappingViewRow,
      execute: ({ migrationId, after, limit }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT e.entity_id AS mapping_id, m.customer_id, c.external_id, m.provider_customer_id, m.status,
              (m.id IS NOT NULL AND m.migration_id = ${migrationId}) AS still_ours
            FROM migration_created_entities e
            LEFT JOIN customer_integration_mappings m ON m.id = e.entity_id AND m.tenant_id = e.tenant_id AND m.environment_id = e.environment_id
            LEFT JOIN customers c ON c.id = m.customer_id AND c.tenant_id = m.tenant_id AND c.environment_id = m.environment_id
            WHERE e.tenant_id = ${t.tenantId} AND e.environment_id = ${t.environmentId} AND e.migration_id = ${migrationId}
              AND e.entity_type = 'mapping' AND e.entity_id > ${after}
            ORDER BY e.entity_id LIMIT ${limit}`
        )
    })
    /** The mappings this migration wrote after `after`, as they are now (for verify). */
    const mappingsPage = (migrationId: string, after: string, limit: number): Effect.Effect<ReadonlyArray<MigrationMappingView>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(mappingRows({ migrationId, after, limit })).pipe(
        Effect.map((rows) => rows.map((r) => ({ ...r, customerId: r.customerId ?? "", stillOurs: r.stillOurs === true })))
      )

    const customerRows = SqlSchema.findAll({
      Request: Schema.Array(Schema.String),
      Result: Schema.Struct({ id: Schema.String, externalId: Schema.String }),
      execute: (ids) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT id, external_id FROM customers
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id IN ${sql.in(ids)} ORDER BY id`
        )
    })
    /** External ids of these customers (those that still exist). */
    const customersByIds = (ids: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<{ readonly id: string; readonly externalId: string }>, SqlError.SqlError, CurrentTenant> =>
      ids.length === 0 ? Effect.succeed([]) : orDieOnRow(customerRows(ids))

    const removeCustomers = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(0)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`DELETE FROM customers WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id IN ${sql.in(ids)} RETURNING id`
          ).pipe(Effect.map((rows) => rows.length))

    return { customersByIds, removeCustomers, create, get, latest, saveProgress, heartbeat, finish, release, claimOrphans, countEntities, entitiesPage, replacedPage, mappingsPage } as const
  })
}) {}

/**
 * Migration jobs (`migration_jobs`), what they created (`migration_created_entities`) and the
 * mapping rows they replaced (`migration_replaced_mappings`), for status, resume and rollback.
 * Rows are decoded by the Schemas of MigrationJobRows.ts (JSON columns read as text, see there).
 *
 * A running job is owned by the process that `claimed_by` names while it heartbeats; a job whose
 * owner released it or stopped heartbeating is claimed by the next runner (restart, other replica).
 * Every write of progress is conditional on still owning the job.
 */
import { SqlError, SqlSchema } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Data, Effect, Option, Schema } from "effect"
import { orDieOnRow } from "../db/Rows.js"
import { textArray } from "../db/SqlArrays.js"
import { newId } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { asOwner, asSystem } from "../db/RowSecurity.js"
import {
  type CsvImportSummary,
  type MigrationJob,
  type MigrationKind,
  type MigrationOptions,
  type MigrationProgress,
  type RollbackReport,
  zeroCounts
} from "../migration/Model.js"
import { countsJson, JobRowSchema, type MappingSnapshot, toJob, TouchingRowSchema } from "./MigrationJobRows.js"

export type { MappingSnapshot } from "./MigrationJobRows.js"

/** Another migration of this tenant environment is running. */
export class MigrationAlreadyRunning extends Data.TaggedError("MigrationAlreadyRunning")<{ readonly runningId: string }> {}

const decodeJobs = Schema.decodeUnknown(Schema.Array(JobRowSchema))
const decodeTouching = Schema.decodeUnknown(Schema.Array(TouchingRowSchema))

export class MigrationJobRepo extends Effect.Service<MigrationJobRepo>()("flexprice/MigrationJobRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const cols = sql`id, tenant_id, environment_id, kind, status, dry_run, options::text AS options_json, cursor, pages,
      counts::text AS counts_json, problems::text AS problems_json, error, started_at, finished_at, heartbeat_at,
      claimed_by, rollback::text AS rollback_json, rows_total, rows_done, result::text AS result_json`

    const isUniqueViolation = (e: SqlError.SqlError) => (e.cause as { code?: string } | undefined)?.code === "23505"

    /** Jobs a statement returned (a write's RETURNING rows), decoded. */
    const jobsOf = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<MigrationJob>> =>
      Effect.map(Effect.orDie(decodeJobs(rows)), (decoded) => decoded.map(toJob))
    const firstJob = (rows: ReadonlyArray<unknown>) => Effect.map(jobsOf(rows), (jobs) => Option.fromNullable(jobs[0]))

    const findRow = SqlSchema.findOne({
      Request: Schema.Struct({ id: Schema.optional(Schema.String) }),
      Result: JobRowSchema,
      execute: ({ id }) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM migration_jobs
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              AND ${id === undefined ? sql`status = 'running'` : sql`id = ${id}`}`
        )
    })

    const findRunning: Effect.Effect<Option.Option<MigrationJob>, SqlError.SqlError, CurrentTenant> = orDieOnRow(findRow({})).pipe(
      Effect.map(Option.map(toJob))
    )

    /** Insert a running job; fails with MigrationAlreadyRunning when one is running here. */
    const create = (input: { readonly kind: MigrationKind; readonly options: MigrationOptions; readonly claimedBy: string }) =>
      Effect.gen(function* () {
        const t = yield* CurrentTenant
        const id = newId.migration()
        const inserted = yield* sql`INSERT INTO migration_jobs ${sql.insert({
          id,
          tenantId: t.tenantId,
          environmentId: t.environmentId,
          kind: input.kind,
          status: "running",
          dryRun: input.options.dryRun,
          options: JSON.stringify({ create_missing_customers: input.options.createMissingCustomers, conflict_strategy: input.options.conflictStrategy }),
          counts: countsJson({ counts: zeroCounts, problemsTotal: 0 }),
          problems: "[]",
          claimedBy: input.claimedBy
        })} RETURNING ${cols}`.pipe(
          Effect.flatMap(firstJob),
          Effect.catchIf(isUniqueViolation, () => Effect.succeed(Option.none<MigrationJob>()))
        )
        if (Option.isSome(inserted)) return inserted.value
        const running = yield* findRunning
        return yield* new MigrationAlreadyRunning({ runningId: Option.match(running, { onNone: () => "unknown", onSome: (j) => j.id }) })
      })

    const get = (id: string): Effect.Effect<Option.Option<MigrationJob>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(findRow({ id })).pipe(Effect.map(Option.map(toJob)))

    const listRows = SqlSchema.findAll({
      Request: Schema.Struct({ limit: Schema.Int, before: Schema.optional(Schema.String) }),
      Result: JobRowSchema,
      execute: (opts) =>
        Effect.flatMap(CurrentTenant, (t) =>
          sql`SELECT ${cols} FROM migration_jobs
            WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
              ${opts.before
                // the cursor row is looked up in this tenant environment too: another tenant's job id
                // positions nothing (an empty page, as for an unknown id) and reveals nothing
                ? sql`AND (started_at, id) < (SELECT started_at, id FROM migration_jobs
                    WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${opts.before})`
                : sql``}
            ORDER BY started_at DESC, id DESC LIMIT ${opts.limit}`
        )
    })
    const list = (opts: { readonly limit: number; readonly before?: string | undefined }): Effect.Effect<ReadonlyArray<MigrationJob>, SqlError.SqlError, CurrentTenant> =>
      orDieOnRow(listRows({ limit: opts.limit, ...(opts.before ? { before: opts.before } : {}) })).pipe(Effect.map((rows) => rows.map(toJob)))

    /** Save progress after a page; false when this process no longer owns the job. */
    const saveProgress = (id: string, owner: string, p: MigrationProgress) =>
      sql`UPDATE migration_jobs SET cursor = ${p.cursor}, pages = ${p.pages}, counts = ${countsJson(p)}::jsonb,
            problems = ${JSON.stringify(p.problems)}::jsonb, heartbeat_at = now()
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    const heartbeat = (id: string, owner: string) =>
      sql`UPDATE migration_jobs SET heartbeat_at = now()
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    const finish = (id: string, owner: string, status: "completed" | "failed", error: string | null, p: MigrationProgress) =>
      sql`UPDATE migration_jobs SET status = ${status}, error = ${error}, cursor = ${p.cursor}, pages = ${p.pages},
            counts = ${countsJson(p)}::jsonb, problems = ${JSON.stringify(p.problems)}::jsonb,
            finished_at = now(), heartbeat_at = now(), claimed_by = NULL
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    /**
     * CSV import: save rows done (and the counts so far) after a chunk, in the chunk's transaction;
     * false when this process no longer owns the job (the transaction must then roll back).
     */
    const saveCsvProgress = (id: string, owner: string, p: MigrationProgress, rows: { readonly done: number; readonly total: number | null }) =>
      sql`UPDATE migration_jobs SET rows_done = ${rows.done}, rows_total = ${rows.total}, counts = ${countsJson(p)}::jsonb,
            problems = ${JSON.stringify(p.problems)}::jsonb, heartbeat_at = now()
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    /** CSV import: the final status with what was applied (conditional on owning the job). */
    const finishCsv = (
      id: string,
      owner: string,
      end: {
        readonly status: "completed" | "failed"
        readonly error: string | null
        readonly progress: MigrationProgress
        readonly rowsDone: number
        readonly rowsTotal: number | null
        readonly summary: CsvImportSummary
      }
    ) =>
      sql`UPDATE migration_jobs SET status = ${end.status}, error = ${end.error}, counts = ${countsJson(end.progress)}::jsonb,
            problems = ${JSON.stringify(end.progress.problems)}::jsonb, rows_done = ${end.rowsDone}, rows_total = ${end.rowsTotal},
            result = ${JSON.stringify(end.summary)}::jsonb, finished_at = now(), heartbeat_at = now(), claimed_by = NULL
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    /** Let go of a running job (graceful stop): the next runner resumes it at once. */
    const release = (id: string, owner: string) =>
      sql`UPDATE migration_jobs SET claimed_by = NULL
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    /**
     * Every tenant: claim running jobs that are unowned (released by a graceful stop) or whose
     * owner stopped heartbeating. Stripe-customer jobs resume from their cursor; CSV imports (whose
     * file died with the process) are undone by the claimer and end `failed`. Deliberately
     * cross-tenant: this is the runner's scan. A live import keeps its heartbeat fresh and commits
     * each chunk only while it still owns the job, so a claim never races a commit. A runner never
     * claims its own work: it is alive, whatever its heartbeat says.
     */
    const claimOrphans = (owner: string, staleSeconds: number) =>
      sql`UPDATE migration_jobs SET claimed_by = ${owner}, heartbeat_at = now()
          WHERE status = 'running' AND claimed_by IS DISTINCT FROM ${owner}
            AND (claimed_by IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleSeconds}))
          RETURNING ${cols}`.pipe(
        Effect.flatMap(jobsOf),
        asSystem("the migration runner's scan of every tenant")
      )

    /** Current tenant: claim its running job if unowned or stale (the CLI resuming a job). */
    const claimRunning = (owner: string, staleSeconds: number) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE migration_jobs SET claimed_by = ${owner}, heartbeat_at = now()
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND status = 'running'
            AND kind = 'stripe_customers'
            AND (claimed_by IS NULL OR heartbeat_at < now() - make_interval(secs => ${staleSeconds}))
          RETURNING ${cols}`
      ).pipe(Effect.flatMap(firstJob))

    /** A dry run restarts from the top (its "would create" memory was in the dead process). */
    const resetProgress = (id: string, owner: string) =>
      sql`UPDATE migration_jobs SET cursor = NULL, pages = 0, counts = ${countsJson({ counts: zeroCounts, problemsTotal: 0 })}::jsonb,
            problems = '[]'::jsonb, heartbeat_at = now()
          WHERE id = ${id} AND status = 'running' AND claimed_by = ${owner} RETURNING id`.pipe(Effect.map((rows) => rows.length > 0))

    const recordEntities = (migrationId: string, entities: ReadonlyArray<{ readonly type: "customer" | "mapping"; readonly id: string }>) =>
      entities.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`INSERT INTO migration_created_entities (migration_id, entity_type, entity_id, tenant_id, environment_id)
              SELECT ${migrationId}, e.entity_type, e.entity_id, ${t.tenantId}, ${t.environmentId}
              FROM unnest(${textArray(entities.map((e) => e.type))}::text[], ${textArray(entities.map((e) => e.id))}::text[]) AS e(entity_type, entity_id)
              ON CONFLICT DO NOTHING`
          ).pipe(Effect.asVoid)

    /** The first snapshot of a row wins: it is the state before this migration touched it. */
    const recordReplaced = (migrationId: string, snapshots: ReadonlyArray<MappingSnapshot>) =>
      snapshots.length === 0
        ? Effect.void
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`INSERT INTO migration_replaced_mappings ${sql.insert(
              snapshots.map((s) => ({
                migrationId,
                mappingId: s.id,
                tenantId: t.tenantId,
                environmentId: t.environmentId,
                snapshot: JSON.stringify(s)
              }))
            )} ON CONFLICT DO NOTHING`
          ).pipe(Effect.asVoid)

    /**
     * Mapping rows (any status) that a link of these Stripe customers / external ids may touch,
     * read before a page is applied so replaced rows can be snapshotted, with the external id of
     * each row's customer (which tells a page what is already mapped exactly so).
     */
    const mappingsTouching = (stripeCustomerIds: ReadonlyArray<string>, externalIds: ReadonlyArray<string>) =>
      stripeCustomerIds.length === 0 && externalIds.length === 0
        ? Effect.succeed({ snapshots: [] as ReadonlyArray<MappingSnapshot>, externalIdOfCustomer: new Map<string, string>() as ReadonlyMap<string, string> })
        : Effect.flatMap(CurrentTenant, (t) =>
            // Two index lookups, one statement each: a mapping by its Stripe customer, and a mapping
            // by its customer's external id (driven from the customers' unique index). As one `OR`
            // with a subquery the planner read every mapping of the tenant on each chunk, so an
            // import's chunks grew slower with each chunk before them (BENCHMARKS.md, "Noisy
            // neighbour"); the split statements also need planner statistics (refreshStatistics).
            Effect.flatMap(
              Effect.all([
                sql`SELECT m.id, m.customer_id, m.provider_customer_id, m.status, m.source, m.migration_id,
                    m.metadata::text AS metadata_json, m.created_at, c.external_id AS customer_external_id
                  FROM customer_integration_mappings m
                  LEFT JOIN customers c ON c.id = m.customer_id
                  WHERE m.tenant_id = ${t.tenantId} AND m.environment_id = ${t.environmentId} AND m.provider_type = 'stripe'
                    AND m.provider_customer_id = ANY(${textArray(stripeCustomerIds)}::text[])`,
                sql`SELECT m.id, m.customer_id, m.provider_customer_id, m.status, m.source, m.migration_id,
                    m.metadata::text AS metadata_json, m.created_at, k.external_id AS customer_external_id
                  FROM customers k
                  JOIN customer_integration_mappings m ON m.customer_id = k.id
                  WHERE k.tenant_id = ${t.tenantId} AND k.environment_id = ${t.environmentId}
                    AND k.external_id = ANY(${textArray(externalIds)}::text[])
                    AND m.tenant_id = ${t.tenantId} AND m.environment_id = ${t.environmentId} AND m.provider_type = 'stripe'`
              ]),
              ([byStripe, byExternal]) => Effect.orDie(decodeTouching([...byStripe, ...byExternal]))
            )
          ).pipe(
            Effect.map((rows) => [...new Map(rows.map((r) => [r.id, r] as const)).values()]),
            Effect.map((rows) => ({
              snapshots: rows.map(({ customerExternalId: _, ...r }): MappingSnapshot => ({ ...r, createdAt: r.createdAt.toISOString() })),
              externalIdOfCustomer: new Map(rows.flatMap((r) => (r.customerExternalId === null ? [] : [[r.customerId, r.customerExternalId] as const]))) as ReadonlyMap<
                string,
                string
              >
            }))
          )

    /**
     * Fresh planner statistics for customers and mappings while an import grows them. Embedded
     * PGlite runs no autovacuum: without statistics its planner looks mappings up by the tenant
     * prefix of the wrong unique index and filters every mapping of the tenant (PGlite, 100,000
     * mappings: 23 ms a lookup, 0.6 ms after ANALYZE). Table-wide maintenance, so not scoped.
     */
    const refreshStatistics = sql`ANALYZE customers, customer_integration_mappings`.pipe(Effect.asVoid, asOwner("only the table owner may ANALYZE"))

    /** Delete the given mapping rows if they still carry this migration's id. */
    const deleteMappings = (migrationId: string, ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(0)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`DELETE FROM customer_integration_mappings
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId}
                AND migration_id = ${migrationId} AND id IN ${sql.in(ids)} RETURNING id`
          ).pipe(Effect.map((rows) => rows.length))

    /** Put replaced rows back; a row whose keys are taken by now is left out (reported, not forced). Answers how many were restored. */
    const restoreMappings = (snapshots: ReadonlyArray<MappingSnapshot>) =>
      snapshots.length === 0
        ? Effect.succeed(0)
        : Effect.flatMap(CurrentTenant, (t) =>
            sql`INSERT INTO customer_integration_mappings ${sql.insert(
              snapshots.map((s) => ({
                id: s.id,
                tenantId: t.tenantId,
                environmentId: t.environmentId,
                customerId: s.customerId,
                providerType: "stripe",
                providerCustomerId: s.providerCustomerId,
                metadata: s.metadataJson,
                status: s.status,
                source: s.source,
                migrationId: s.migrationId,
                createdAt: s.createdAt
              }))
            )} ON CONFLICT DO NOTHING RETURNING id`
          ).pipe(Effect.map((rows) => rows.length))

    /** Customers (of these) that hold an active mapping from anything but this migration. */
    const customersMappedElsewhere = (migrationId: string, customerIds: ReadonlyArray<string>) =>
      customerIds.length === 0
        ? Effect.succeed(new Set<string>())
        : Effect.flatMap(CurrentTenant, (t) =>
            sql<{ customerId: string }>`SELECT customer_id FROM customer_integration_mappings
              WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND provider_type = 'stripe'
                AND customer_id IN ${sql.in(customerIds)} AND (migration_id IS NULL OR migration_id <> ${migrationId})`
          ).pipe(Effect.map((rows) => new Set(rows.map((r) => r.customerId))))

    const markRolledBack = (id: string, report: RollbackReport) =>
      Effect.flatMap(CurrentTenant, (t) =>
        sql`UPDATE migration_jobs SET status = 'rolled_back', rollback = ${JSON.stringify(report)}::jsonb
          WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} AND id = ${id}
            AND status IN ('completed', 'failed') RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    return {
      create,
      findRunning,
      get,
      list,
      saveProgress,
      heartbeat,
      finish,
      saveCsvProgress,
      finishCsv,
      release,
      claimOrphans,
      claimRunning,
      resetProgress,
      recordEntities,
      recordReplaced,
      mappingsTouching,
      refreshStatistics,
      deleteMappings,
      restoreMappings,
      customersMappedElsewhere,
      markRolledBack
    } as const
  })
}) {}

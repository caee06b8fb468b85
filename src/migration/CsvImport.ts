/**
 * Bulk CSV mapping import (`external_id,stripe_customer_id[,name,email]`, SPEC §9) as a background
 * job in chunks. The request checks the header, creates the job and answers 202; the job then
 * 1. reads the whole file once, in steps that yield, to count its rows and find ids paired two
 *    ways (every row of such an id is refused, the first one included);
 * 2. reads it again a chunk of rows at a time: file checks, optional Stripe existence checks
 *    (outside any transaction), then ONE short transaction per chunk that links its good rows
 *    (CustomerLinker.linkMany, the same rules as everywhere) and saves rows done, counts and what
 *    it created — on condition that this process still owns the job.
 * Between chunks other requests reach the database (one connection when embedded), and chunks
 * of other tenants' jobs take turns with this one (JobGate).
 *
 * Status = what was applied, always: a live import heartbeats, so the orphan scan never takes it
 * for dead; a chunk commits only while its job is still owned, so nothing commits after a
 * takeover; and an import that cannot finish (error, crash, shutdown) is undone — by itself, or
 * by the runner that claims it — before it is marked `failed`. The file lives only in memory,
 * so an interrupted import is not resumed: it is undone, and the client uploads it again.
 *
 * Dry runs and the all-or-nothing check decide each chunk against what is stored: an overwrite
 * that frees a Stripe customer for a row in a LATER chunk is reported as a conflict there (the
 * real import, chunk after chunk, applies both).
 */
import { PgClient } from "@effect/sql-pg"
import { Cause, Effect, Exit, Option, Schedule } from "effect"
import { CustomerLinker, type LinkOutcome } from "../customers/CustomerLinker.js"
import { InvalidInput } from "../domain/Errors.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import { type MappingSnapshot, MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { heartbeatInterval, MigrationRunnerConfig } from "./Config.js"
import { csvItems } from "./Csv.js"
import { checkCsvItem, CsvDuplicates, type CsvMappingRow, type CsvRowProblem, isRowProblem, readCsvHeader } from "./CsvMapping.js"
import { JobGate } from "./JobGate.js"
import { type ConflictStrategy, type CsvImportSummary, MAX_PROBLEMS, type MigrationJob, type MigrationProgress, zeroCounts } from "./Model.js"
import { freshUndo, Rollback, type UndoState } from "./Rollback.js"
import { CHUNK_RETRY, describeError, isInfraError, LostClaim } from "./Shared.js"

export interface CsvImportOptions {
  readonly verify: boolean
  readonly allOrNothing: boolean
  readonly dryRun: boolean
  readonly createMissingCustomers: boolean
  readonly conflictStrategy: ConflictStrategy
}

/** Records read between two yields in the counting pass. */
const COUNT_STEP = 2000

interface Chunk {
  readonly records: number
  readonly rows: ReadonlyArray<CsvMappingRow>
  readonly problems: ReadonlyArray<CsvRowProblem>
  readonly warnings: number
}

/** Where an import stands: immutable, so a chunk retried after a rollback starts from the same state. */
interface Tally {
  readonly rowsDone: number
  readonly valid: number
  readonly warnings: number
  readonly mapped: number
  readonly created: number
  readonly alreadyMapped: number
  readonly overwritten: number
  readonly bad: { readonly conflicts: number; readonly missingExternalId: number; readonly customerMissing: number; readonly failed: number }
  readonly problems: ReadonlyArray<CsvRowProblem>
  readonly problemsTotal: number
}

const emptyTally: Tally = {
  rowsDone: 0,
  valid: 0,
  warnings: 0,
  mapped: 0,
  created: 0,
  alreadyMapped: 0,
  overwritten: 0,
  bad: { conflicts: 0, missingExternalId: 0, customerMissing: 0, failed: 0 },
  problems: [],
  problemsTotal: 0
}

const badCount = (t: Tally) => t.problemsTotal

/** A chunk's rows and outcomes (outcome undefined: the row is bad, its problem in `problems`). */
const addChunk = (t: Tally, chunk: Chunk, problems: ReadonlyArray<CsvRowProblem>, outcomes: ReadonlyArray<LinkOutcome>): Tally => {
  const sorted = [...problems].sort((a, b) => a.line - b.line)
  const bad = { ...t.bad }
  for (const p of sorted) {
    if (p.code === "conflict") bad.conflicts++
    else if (p.code === "missing_external_id") bad.missingExternalId++
    else if (p.code === "customer_missing") bad.customerMissing++
    else bad.failed++
  }
  let { mapped, created, alreadyMapped, overwritten } = t
  for (const o of outcomes) {
    if (o.mapping === "created" || o.mapping === "updated") {
      mapped++
      if (o.customerCreated) created++
      if (o.conflictWith !== undefined && o.mapping === "updated") overwritten++
    }
    if (o.mapping === "unchanged") alreadyMapped++
  }
  const room = Math.max(0, MAX_PROBLEMS - t.problems.length)
  return {
    rowsDone: t.rowsDone + chunk.records,
    valid: t.valid + outcomes.length,
    warnings: t.warnings + chunk.warnings,
    mapped,
    created,
    alreadyMapped,
    overwritten,
    bad,
    problems: room > 0 ? [...t.problems, ...sorted.slice(0, room)] : t.problems,
    problemsTotal: t.problemsTotal + sorted.length
  }
}

const progressOf = (t: Tally, applied: boolean): MigrationProgress => ({
  cursor: null,
  pages: 0,
  counts: {
    ...zeroCounts,
    seen: t.rowsDone,
    mapped: applied ? t.mapped : 0,
    created: applied ? t.created : 0,
    already_mapped: t.alreadyMapped,
    conflicts: t.bad.conflicts,
    missing_external_id: t.bad.missingExternalId,
    customer_missing: t.bad.customerMissing,
    failed: t.bad.failed
  },
  problems: t.problems.map((p) => ({
    stripe_customer_id: p.stripeCustomerId ?? "",
    external_id: p.externalId,
    code: p.code,
    message: `line ${p.line}: ${p.reason}`,
    line: p.line
  })),
  problemsTotal: t.problemsTotal
})

const summaryOf = (t: Tally, applied: boolean): CsvImportSummary => ({ valid_rows: t.valid, applied: applied && t.valid > 0, overwritten: t.overwritten, warnings_total: t.warnings })

/** Stop the import with a final state (refusal, conflict while applying all-or-nothing). */
class Refused {
  readonly _tag = "Refused"
  constructor(readonly message: string) {}
}

export class CsvImport extends Effect.Service<CsvImport>()("flexprice/CsvImport", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const repo = yield* MigrationJobRepo
    const linker = yield* CustomerLinker
    const accounts = yield* StripeAccounts
    const stripe = yield* StripeClient
    const watermark = yield* IngestWatermark
    const gate = yield* JobGate
    const rollback = yield* Rollback
    const config = yield* MigrationRunnerConfig

    /** Check the header (400 before any job exists), then create the job (MigrationAlreadyRunning). */
    const start = (text: string, options: CsvImportOptions, owner: string) =>
      Effect.gen(function* () {
        const header = readCsvHeader(csvItems(text))
        if (header._tag === "Left") return yield* InvalidInput.of(header.left.code, header.left.message)
        return yield* repo.create({
          kind: "csv",
          options: { dryRun: options.dryRun, createMissingCustomers: options.createMissingCustomers, conflictStrategy: options.conflictStrategy },
          claimedBy: owner
        })
      }).pipe(Effect.withSpan("migration.csv_start", { attributes: { "csv.bytes": text.length } }))

    /** Pass 1: rows in the file and the duplicate index, yielding every COUNT_STEP records. */
    const countPass = (text: string) =>
      Effect.gen(function* () {
        const items = csvItems(text)
        const header = readCsvHeader(items)
        if (header._tag === "Left") return yield* InvalidInput.of(header.left.code, header.left.message)
        const duplicates = new CsvDuplicates()
        let total = 0
        for (let next = items.next(); !next.done; next = items.next()) {
          total++
          const checked = checkCsvItem(header.right, next.value)
          if (!isRowProblem(checked)) duplicates.observe(checked)
          if (total % COUNT_STEP === 0) yield* Effect.yieldNow()
        }
        return { total, duplicates, header: header.right }
      })

    /** Pass 2: the file in chunks of `chunkRows` records, file checks and duplicates applied. */
    function* chunksOf(text: string, duplicates: CsvDuplicates): Generator<Chunk> {
      const items = csvItems(text)
      const header = readCsvHeader(items)
      if (header._tag === "Left") return
      let chunk = { records: 0, rows: [] as Array<CsvMappingRow>, problems: [] as Array<CsvRowProblem>, warnings: 0 }
      for (let next = items.next(); !next.done; next = items.next()) {
        chunk.records++
        const checked = checkCsvItem(header.right, next.value)
        if (isRowProblem(checked)) chunk.problems.push(checked)
        else {
          const problem = duplicates.judge(checked)
          if (problem === undefined) chunk.rows.push(checked)
          else if (problem.code === "duplicate_row") chunk.warnings++
          else chunk.problems.push(problem)
        }
        if (chunk.records >= config.chunkRows) {
          yield chunk
          chunk = { records: 0, rows: [], problems: [], warnings: 0 }
        }
      }
      if (chunk.records > 0) yield chunk
    }

    /** Stripe existence checks (verify=true), outside any transaction: the rows Stripe knows, and the rest as problems. */
    const stripeCheck = (rows: ReadonlyArray<CsvMappingRow>) =>
      Effect.gen(function* () {
        const ref = yield* accounts.refForOperation("stripe_csv_verify")
        const checks = yield* Effect.forEach(rows, (r) => Effect.either(stripe.retrieveCustomer(ref, r.stripeCustomerId)), { concurrency: 8 })
        const kept: Array<CsvMappingRow> = []
        const problems: Array<CsvRowProblem> = []
        checks.forEach((check, i) => {
          const r = rows[i]!
          const ids = { line: r.line, externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
          if (check._tag === "Right") {
            if (check.right.deleted) problems.push({ ...ids, code: "stripe_customer_deleted", reason: "the Stripe customer was deleted" })
            else kept.push(r)
          } else if (check.left._tag === "StripeInvalidRequest" && check.left.status === 404)
            problems.push({ ...ids, code: "stripe_customer_not_found", reason: `Stripe has no customer ${r.stripeCustomerId}` })
          else problems.push({ ...ids, code: "stripe_check_failed", reason: describeError(check.left) })
        })
        return { kept, problems }
      })

    const run = (job: MigrationJob, text: string, options: CsvImportOptions, owner: string) =>
      Effect.gen(function* () {
        yield* repo.heartbeat(job.id, owner).pipe(Effect.ignore, Effect.repeat(Schedule.spaced(heartbeatInterval(config.staleSeconds))), Effect.forkScoped)
        const linkInput = (r: CsvMappingRow, dryRun: boolean) => ({
          externalId: r.externalId,
          stripeCustomerId: r.stripeCustomerId,
          name: r.name,
          email: r.email,
          source: "csv" as const,
          migrationId: job.id,
          createCustomer: options.createMissingCustomers,
          onConflict: options.conflictStrategy === "overwrite" ? ("overwrite" as const) : ("skip" as const),
          dryRun
        })
        /** Outcomes of the linkable rows, and the rows refused by the linker as problems. */
        const judge = (rows: ReadonlyArray<CsvMappingRow>, outcomes: ReadonlyArray<LinkOutcome>) => {
          const good: Array<LinkOutcome> = []
          const problems: Array<CsvRowProblem> = []
          rows.forEach((r, i) => {
            const o = outcomes[i]!
            const ids = { line: r.line, externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
            if (o.mapping === "conflict")
              problems.push({
                ...ids,
                code: "conflict",
                reason:
                  o.conflictWith?.stripeCustomerId !== undefined
                    ? `external_id ${r.externalId} is already mapped to Stripe customer ${o.conflictWith.stripeCustomerId}`
                    : `Stripe customer ${r.stripeCustomerId} is already mapped to customer ${o.conflictWith?.customerId ?? "?"}`
              })
            else if (o.mapping === "customer_missing")
              problems.push({ ...ids, code: "customer_missing", reason: `no customer with external_id ${r.externalId} (create_missing_customers=false)` })
            else good.push(o)
          })
          return { good, problems }
        }
        const owned = (ok: boolean) => (ok ? Effect.void : Effect.fail(new LostClaim()))

        const { total, duplicates } = yield* countPass(text)
        yield* repo.saveCsvProgress(job.id, owner, progressOf(emptyTally, false), { done: 0, total }).pipe(Effect.flatMap(owned))

        /** Decide every chunk against what is stored, writing nothing (dry run, all-or-nothing check). */
        const dryPass = Effect.gen(function* () {
          let t = emptyTally
          for (const chunk of chunksOf(text, duplicates)) {
            const checked = options.verify ? yield* stripeCheck(chunk.rows) : { kept: chunk.rows, problems: [] }
            const outcomes = yield* linker.linkMany(checked.kept.map((r) => linkInput(r, true)))
            const { good, problems } = judge(checked.kept, outcomes)
            t = addChunk(t, chunk, [...chunk.problems, ...checked.problems, ...problems], good)
            yield* repo.saveCsvProgress(job.id, owner, progressOf(t, options.dryRun), { done: t.rowsDone, total }).pipe(Effect.flatMap(owned))
          }
          return t
        })

        /** Link chunk after chunk, each in its turn and its own transaction. */
        const applyPass = (verified: boolean) =>
          Effect.gen(function* () {
            let t = emptyTally
            for (const chunk of chunksOf(text, duplicates)) {
              const checked = options.verify && !verified ? yield* stripeCheck(chunk.rows) : { kept: chunk.rows, problems: [] }
              const before = t
              t = yield* gate
                .turn(
                  watermark.stamped(() =>
                    sql.withTransaction(
                      Effect.gen(function* () {
                        const rows = checked.kept
                        const { snapshots } = yield* repo.mappingsTouching(rows.map((r) => r.stripeCustomerId), rows.map((r) => r.externalId))
                        const outcomes = yield* linker.linkMany(rows.map((r) => linkInput(r, false)))
                        const { good, problems } = judge(rows, outcomes)
                        if (options.allOrNothing && problems.length > 0)
                          return yield* Effect.fail(new Refused(`all_or_nothing: line ${problems[0]!.line} conflicted while applying (${problems[0]!.reason})`))
                        const entities: Array<{ type: "customer" | "mapping"; id: string }> = []
                        const replaced: Array<MappingSnapshot> = []
                        rows.forEach((r, i) => {
                          const o = outcomes[i]!
                          if (o.mapping !== "created" && o.mapping !== "updated") return
                          if (o.customerCreated && o.customerId !== null) entities.push({ type: "customer", id: o.customerId })
                          if (o.mappingId !== undefined) entities.push({ type: "mapping", id: o.mappingId })
                          if (o.mapping === "updated")
                            for (const row of snapshots)
                              if ((row.providerCustomerId === r.stripeCustomerId || row.customerId === o.customerId) && row.migrationId !== job.id) replaced.push(row)
                        })
                        yield* repo.recordEntities(job.id, entities)
                        yield* repo.recordReplaced(job.id, replaced)
                        const next = addChunk(before, chunk, [...chunk.problems, ...checked.problems, ...problems], good)
                        yield* repo.saveCsvProgress(job.id, owner, progressOf(next, true), { done: next.rowsDone, total }).pipe(Effect.flatMap(owned))
                        return next
                      })
                    )
                  )
                )
                .pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
            }
            return t
          })

        const outcome = yield* Effect.exit(
          Effect.gen(function* () {
            if (options.dryRun) return { tally: yield* dryPass, applied: false, refusal: null as string | null }
            if (options.allOrNothing) {
              const check = yield* dryPass
              if (badCount(check) > 0) return { tally: check, applied: false, refusal: `all_or_nothing: nothing applied because ${badCount(check)} row(s) are bad` }
              return { tally: yield* applyPass(true), applied: true, refusal: null }
            }
            return { tally: yield* applyPass(false), applied: true, refusal: null }
          })
        )
        if (Exit.isSuccess(outcome)) {
          const { tally, applied, refusal } = outcome.value
          const finished = yield* repo.finishCsv(job.id, owner, {
            status: refusal === null ? "completed" : "failed",
            error: refusal,
            // A dry run's counts are what the import would do; a refused one's count nothing linked.
            progress: progressOf(tally, refusal === null),
            rowsDone: tally.rowsDone,
            rowsTotal: total,
            summary: summaryOf(tally, applied && refusal === null)
          })
          if (!finished) yield* Effect.logWarning("CSV import taken over before it finished").pipe(Effect.annotateLogs({ migration_id: job.id }))
          return
        }
        if (Cause.isInterruptedOnly(outcome.cause)) return yield* Effect.interrupt
        const failure = Cause.failureOption(outcome.cause)
        if (Option.isSome(failure) && failure.value instanceof LostClaim) {
          yield* Effect.logWarning("CSV import taken over by another runner").pipe(Effect.annotateLogs({ migration_id: job.id }))
          return
        }
        const reason = Option.match(failure, {
          onSome: (e) => (e instanceof Refused ? e.message : describeError(e)),
          onNone: () => "internal error"
        })
        if (!(Option.isSome(failure) && failure.value instanceof Refused))
          yield* Effect.logError("CSV import failed", outcome.cause).pipe(Effect.annotateLogs({ migration_id: job.id }))
        yield* undoAndFail(job, owner, reason)
      }).pipe(
        Effect.scoped,
        // Shutdown: let go; the next runner's scan undoes what was applied and marks it failed.
        Effect.onInterrupt(() => repo.release(job.id, owner).pipe(Effect.ignore)),
        Effect.catchAll((e) => Effect.logError("CSV import bookkeeping failed", e).pipe(Effect.annotateLogs({ migration_id: job.id }))),
        Effect.withSpan("migration.csv_import", { attributes: { "migration.id": job.id, "csv.bytes": text.length } })
      )

    /**
     * Undo what the import applied, then mark it failed with nothing applied. Used by the import
     * itself and by the runner that claims an orphaned import; if this stops half way, the job
     * stays `running`, goes stale and the next claimer undoes the rest.
     */
    const undoAndFail = (job: MigrationJob, owner: string, reason: string) =>
      Effect.gen(function* () {
        const undone: UndoState = yield* rollback.undoAll(job.id, freshUndo, () => repo.heartbeat(job.id, owner))
        const p = undone.progress
        const what =
          p.mappings_removed + p.customers_removed + p.mappings_restored === 0
            ? "nothing was applied"
            : `what it had applied was undone (${p.mappings_removed} mapping(s) and ${p.customers_removed} customer(s) removed, ${p.mappings_restored} restored` +
              ((p.customers_kept_total ?? 0) > 0 ? `, ${p.customers_kept_total} customer(s) kept: they have events or were mapped since` : "") +
              ")"
        yield* repo.finishCsv(job.id, owner, {
          status: "failed",
          error: `${reason}; ${what}`,
          progress: progressOf(emptyTally, false),
          rowsDone: 0,
          rowsTotal: job.rowsTotal,
          summary: summaryOf(emptyTally, false)
        })
      }).pipe(Effect.scoped)

    /** A claimed orphan (its process died or stopped): undo and fail it. */
    const recover = (job: MigrationJob, owner: string) =>
      undoAndFail(job, owner, "interrupted: the import stopped before it finished").pipe(
        Effect.catchAll((e) => Effect.logError("undoing an interrupted CSV import failed", e).pipe(Effect.annotateLogs({ migration_id: job.id }))),
        Effect.withSpan("migration.csv_recover", { attributes: { "migration.id": job.id } })
      )

    return { start, run, recover } as const
  })
}) {}

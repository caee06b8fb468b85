/**
 * Bulk CSV mapping import (`external_id,stripe_customer_id[,name,email]`, SPEC §9) as a background
 * job in chunks. The request checks the header, creates the job and answers 202; the job then
 * 1. reads the whole file once, in steps that yield, to count its rows and find ids paired two
 *    ways (every row of such an id is refused, the first one included);
 * 2. reads it again a chunk of rows at a time: file checks, optional Stripe existence checks
 *    (outside any transaction), then ONE short transaction per chunk that links its good rows
 *    (CustomerLinker.linkMany, the same rules as everywhere, a constant number of statements) and
 *    saves rows done, counts and what it created — on condition that this process still owns
 *    the job. Chunks are sized by how long the last one took (Config.nextChunkSize).
 * Between chunks other requests reach the database (one connection when embedded), and chunks
 * of other tenants' jobs take turns with this one (JobGate). Memory: the upload's text, the
 * duplicate index (the file's ids) and the chunk in hand — never the file's rows.
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
import { Cause, Duration, Effect, Exit, Option, Schedule } from "effect"
import { InvalidInput } from "../domain/Errors.js"
import type { MappingSnapshot } from "../repositories/MigrationJobRepo.js"
import { firstChunkSize, heartbeatInterval, nextChunkSize } from "./Config.js"
import { csvItems } from "./Csv.js"
import { addChunk, type Chunk, chunkReader, emptyTally, judgeOutcomes, progressOf, summaryOf, type Tally } from "./CsvChunks.js"
import { checkCsvItem, CsvDuplicates, type CsvMappingRow, type CsvRowProblem, isRowProblem, readCsvHeader } from "./CsvMapping.js"
import type { ConflictStrategy, MigrationJob } from "./Model.js"
import { freshUndo, Rollback, type UndoState } from "./Rollback.js"
import { CHUNK_RETRY, describeError, isInfraError, linkingJobServices, LostClaim, statisticsSchedule } from "./Shared.js"

export interface CsvImportOptions {
  readonly verify: boolean
  readonly allOrNothing: boolean
  readonly dryRun: boolean
  readonly createMissingCustomers: boolean
  readonly conflictStrategy: ConflictStrategy
}

/** Records read between two yields in the counting pass. */
const COUNT_STEP = 2000

/** Stop the import with a final state (refusal, conflict while applying all-or-nothing). */
class Refused {
  readonly _tag = "Refused"
  constructor(readonly message: string) {}
}

export class CsvImport extends Effect.Service<CsvImport>()("flexprice/CsvImport", {
  effect: Effect.gen(function* () {
    const { sql, repo, linker, accounts, stripe, watermark, gate, config } = yield* linkingJobServices
    const rollback = yield* Rollback

    /** Check the header (400 before any job exists), then create the job (MigrationAlreadyRunning). */
    const start = Effect.fn("CsvImport.start")(function* (text: string, options: CsvImportOptions, owner: string) {
      yield* Effect.annotateCurrentSpan({ "csv.bytes": text.length })
      const header = readCsvHeader(csvItems(text))
      if (header._tag === "Left") return yield* InvalidInput.of(header.left.code, header.left.message)
      return yield* repo.create({
        kind: "csv",
        options: { dryRun: options.dryRun, createMissingCustomers: options.createMissingCustomers, conflictStrategy: options.conflictStrategy },
        claimedBy: owner
      })
    })

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

    const run = Effect.fn("CsvImport.run")(
      function* (job: MigrationJob, text: string, options: CsvImportOptions, owner: string) {
        yield* Effect.annotateCurrentSpan({ "migration.id": job.id, "csv.bytes": text.length })
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
        const owned = (ok: boolean) => (ok ? Effect.void : Effect.fail(new LostClaim()))

        const { total, duplicates } = yield* countPass(text)
        yield* repo.saveCsvProgress(job.id, owner, progressOf(emptyTally, false), { done: 0, total }).pipe(Effect.flatMap(owned))

        /** Decide a chunk against what is stored, writing nothing but the job's progress (dry run, all-or-nothing check). */
        const decideChunk = (before: Tally, chunk: Chunk, checked: { kept: ReadonlyArray<CsvMappingRow>; problems: ReadonlyArray<CsvRowProblem> }) =>
          Effect.gen(function* () {
            const outcomes = yield* linker.linkMany(checked.kept.map((r) => linkInput(r, true)))
            const { good, problems } = judgeOutcomes(checked.kept, outcomes)
            const next = addChunk(before, chunk, [...chunk.problems, ...checked.problems, ...problems], good)
            yield* repo.saveCsvProgress(job.id, owner, progressOf(next, options.dryRun), { done: next.rowsDone, total }).pipe(Effect.flatMap(owned))
            return next
          })

        /** Link a chunk's rows and record what it created and replaced, with the job's progress. */
        const applyChunk = (before: Tally, chunk: Chunk, checked: { kept: ReadonlyArray<CsvMappingRow>; problems: ReadonlyArray<CsvRowProblem> }) =>
          Effect.gen(function* () {
            const rows = checked.kept
            const { snapshots } = yield* repo.mappingsTouching(rows.map((r) => r.stripeCustomerId), rows.map((r) => r.externalId))
            const outcomes = yield* linker.linkMany(rows.map((r) => linkInput(r, false)))
            const { good, problems } = judgeOutcomes(rows, outcomes)
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

        /**
         * The file chunk after chunk, each in its turn and its own transaction, sized by how long
         * the last one took; Stripe checks (verify) run before the turn, outside any transaction.
         */
        const pass = (apply: boolean, verify: boolean) =>
          Effect.gen(function* () {
            let t = emptyTally
            const read = chunkReader(text, duplicates)
            let size = firstChunkSize(config)
            // a dry run or check writes nothing: statistics once, before its first chunk
            const statisticsDue = statisticsSchedule()
            const refreshStatistics = gate.turn(repo.refreshStatistics).pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
            if (statisticsDue(0)) yield* refreshStatistics
            for (let chunk = read(size); chunk !== undefined; chunk = read(size)) {
              const checked = verify ? yield* stripeCheck(chunk.rows) : { kept: chunk.rows, problems: [] }
              const before = t
              const work = apply ? applyChunk(before, chunk, checked) : decideChunk(before, chunk, checked)
              const [took, next] = yield* gate
                .timedTurn(apply ? watermark.stamped(() => sql.withTransaction(work)) : sql.withTransaction(work))
                .pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
              t = next
              size = nextChunkSize(config, size, Duration.toMillis(took))
              if (apply && statisticsDue(t.rowsDone)) yield* refreshStatistics
            }
            return t
          })

        const outcome = yield* Effect.exit(
          Effect.gen(function* () {
            if (options.dryRun) return { tally: yield* pass(false, options.verify), applied: false, refusal: null as string | null }
            if (options.allOrNothing) {
              const check = yield* pass(false, options.verify)
              if (check.problemsTotal > 0)
                return { tally: check, applied: false, refusal: `all_or_nothing: nothing applied because ${check.problemsTotal} row(s) are bad` }
              return { tally: yield* pass(true, false), applied: true, refusal: null }
            }
            return { tally: yield* pass(true, options.verify), applied: true, refusal: null }
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
      },
      (self, job, _text, _options, owner) =>
        self.pipe(
          Effect.scoped,
          // Shutdown: let go; the next runner's scan undoes what was applied and marks it failed.
          Effect.onInterrupt(() => repo.release(job.id, owner).pipe(Effect.ignore)),
          Effect.catchAll((e) => Effect.logError("CSV import bookkeeping failed", e).pipe(Effect.annotateLogs({ migration_id: job.id })))
        )
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
    const recover = Effect.fn("CsvImport.recover")(function* (job: MigrationJob, owner: string) {
      yield* Effect.annotateCurrentSpan({ "migration.id": job.id })
      return yield* undoAndFail(job, owner, "interrupted: the import stopped before it finished").pipe(
        Effect.catchAll((e) => Effect.logError("undoing an interrupted CSV import failed", e).pipe(Effect.annotateLogs({ migration_id: job.id })))
      )
    })

    return { start, run, recover } as const
  })
}) {}

/**
 * Migration of existing Stripe customers (SPEC §9): the job, its pages and chunks; what each Stripe
 * customer of a page counts as is in PageAccounting.ts. CSV imports are in CsvImport.ts, rollbacks
 * in Rollback.ts, verifications in Verify.ts. Every customer and mapping is made by CustomerLinker —
 * a Stripe page, or a CSV chunk's rows, at once with `linkMany`; webhooks use `link`, one
 * customer; both decide through the same rules (LinkRules), so conflict rules and pending-event
 * processing are the same everywhere.
 *
 * Resumability: each Stripe page (100 customers) is applied in chunks, each chunk in ONE
 * database transaction that also saves the cursor (its last customer: Stripe lists from any
 * customer id), the counts and the entities created. A crash or interruption at any instant loses
 * at most the chunk in flight, whose transaction rolls back; the job then resumes after the last
 * committed chunk and ends in exactly the state (and counts) of an uninterrupted run. `pages`
 * counts pages whose last chunk committed. Stripe pages are fetched outside any transaction;
 * chunks are sized by how long the last one took, as a CSV import's are
 * (Config.nextChunkSize: at most FLEXPRICE_MIGRATION_CHUNK_ROWS, so a page of 100 is one chunk
 * on a quick database), and take turns with other tenants' chunks (JobGate).
 *
 * Dry run: the linker is asked what it would do and nothing is written but the job row. What an
 * earlier row of the same run "would have created" is remembered in memory, so a later duplicate
 * of an external_id is reported as the conflict a real run would meet. That memory dies with the
 * process, so a resumed dry run starts again from the first page (it wrote nothing anyway).
 */
import { Cause, Duration, Effect, Exit, Fiber, Metric, MetricLabel, Option, Schedule, Stream } from "effect"
import { NotFound } from "../domain/Errors.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { MigrationAlreadyRunning } from "../repositories/MigrationJobRepo.js"
import type { StripeCustomerPage } from "../stripe/StripeClient.js"
import { isStripeError, type StripeError } from "../stripe/StripeErrors.js"
import { firstChunkSize, heartbeatInterval, nextChunkSize } from "./Config.js"
import { type MigrationJob, type MigrationOptions, type MigrationProgress, zeroCounts } from "./Model.js"
import { accountOne, externalIdOf, freshState, isLinkableExternalId, planPage } from "./PageAccounting.js"
import { CHUNK_RETRY, describeError, isInfraError, linkingJobServices, LostClaim, statisticsSchedule } from "./Shared.js"

/** Called after every committed page (CLI progress line, tests). */
export type PageListener = (progress: MigrationProgress & { readonly migrationId: string }) => Effect.Effect<void>

export class MigrationService extends Effect.Service<MigrationService>()("flexprice/MigrationService", {
  effect: Effect.gen(function* () {
    const { sql, repo, linker, accounts, stripe, watermark, gate, config } = yield* linkingJobServices

    const reporter = yield* ErrorReporter
    const migrationErrors = (code: string) => Metric.increment(Metric.taggedWithLabels(Metrics.errorsTotal, [MetricLabel.make("code", code), MetricLabel.make("area", "migration")]))
    /** A migration that ends `failed` is reported (Sentry when configured) with its job and tenant. */
    const reportFailed = (job: MigrationJob, code: string, error: unknown) =>
      reporter.report(error, {
        area: "migration",
        code,
        tenantId: job.tenantId,
        environmentId: job.environmentId,
        extra: { migration_id: job.id, dry_run: job.dryRun }
      })

    // ------------------------------------------------------------------ pages

    /**
     * Apply a chunk of a page (all of it, or a slice) in one transaction: cursor, counts and
     * created entities included; `pages` counts up with the page's last chunk. Stamped as one
     * in-flight ingest, so the sync watermark stays below the processed rows written for pending
     * events until the chunk commits. Answers how long the chunk took, with its result.
     */
    const applyChunk = Effect.fn("MigrationService.applyChunk")(function* (input: {
      readonly job: MigrationJob
      readonly owner: string
      readonly progress: MigrationProgress
      readonly chunk: { readonly page: StripeCustomerPage; readonly lastOfPage: boolean }
      readonly wouldLink: Map<string, string> | undefined
    }) {
      const { job, owner, progress, chunk, wouldLink } = input
      const page = chunk.page
      yield* Effect.annotateCurrentSpan({ "migration.id": job.id, "migration.page_size": page.customers.length })
      return yield* gate.timedTurn(watermark.stamped(() =>
        sql.withTransaction(
          Effect.gen(function* () {
            const s = freshState(progress)
            const ids = page.customers.map((c) => c.id)
            const externalIds = page.customers.map(externalIdOf).filter(isLinkableExternalId)
            const { snapshots: before, externalIdOfCustomer } = yield* repo.mappingsTouching(ids, externalIds)
            const { rows, toLink } = planPage(job, page.customers, { before, externalIdOfCustomer })
            // The whole page in a constant number of statements; outcome i is what linking the
            // customers one by one in page order would have answered.
            const outcomes = yield* linker.linkMany(toLink, { stopAtConflict: job.options.conflictStrategy === "fail" })
            for (const row of rows) {
              if (row.known) {
                s.counts.seen++
                s.counts.already_mapped++
                continue
              }
              const outcome = row.linkAt === undefined ? undefined : outcomes[row.linkAt]
              yield* accountOne({ job, state: s, before, customer: row.c, outcome, wouldLinkGlobal: wouldLink })
              if (s.stopped !== undefined) break
            }
            const next: MigrationProgress = {
              // A chunk cut short by a `fail` conflict is not complete: the cursor stays.
              cursor: s.stopped === undefined ? (page.lastId ?? progress.cursor) : progress.cursor,
              pages: s.stopped === undefined && chunk.lastOfPage ? progress.pages + 1 : progress.pages,
              counts: s.counts,
              problems: s.problems,
              problemsTotal: s.problemsTotal
            }
            yield* repo.recordEntities(job.id, s.entities)
            yield* repo.recordReplaced(job.id, s.replaced)
            const owned = yield* repo.saveProgress(job.id, owner, next)
            if (!owned) return yield* Effect.fail(new LostClaim())
            return { next, stopped: s.stopped, wouldLink: s.wouldLink }
          })
        )
      )).pipe(Effect.retry({ schedule: CHUNK_RETRY, while: (e) => isInfraError(e) }))
    })

    const progressOf = (job: MigrationJob): MigrationProgress => ({
      cursor: job.cursor,
      pages: job.pages,
      counts: job.counts,
      problems: job.problems,
      problemsTotal: job.problemsTotal
    })

    /** Creates the job row (409-style MigrationAlreadyRunning when one runs here). */
    const start = Effect.fn("MigrationService.start")((options: MigrationOptions, owner: string) =>
      repo.create({ kind: "stripe_customers", options, claimedBy: owner })
    )

    /**
     * Run a claimed job to its end from its saved cursor. Interruption (shutdown) releases the
     * claim so the next runner resumes at once; the page in flight rolls back.
     */
    const run = Effect.fn("MigrationService.run")(
      function* (job0: MigrationJob, owner: string, onPage?: PageListener) {
        yield* Effect.annotateCurrentSpan({ "migration.id": job0.id, "migration.dry_run": job0.dryRun })
        let job = job0
        if (job.dryRun && (job.pages > 0 || job.counts.seen > 0)) {
          yield* repo.resetProgress(job.id, owner)
          job = { ...job, cursor: null, pages: 0, counts: zeroCounts, problems: [], problemsTotal: 0 }
        }
        let progress = progressOf(job)
        const wouldLink = job.dryRun ? new Map<string, string>() : undefined

        const finish = (status: "completed" | "failed", error: string | null) =>
          repo.finish(job.id, owner, status, error, progress).pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))

        // Keep the claim fresh while a page waits on Stripe (rate limits, retries).
        const heartbeat = yield* repo.heartbeat(job.id, owner).pipe(
          Effect.ignore,
          Effect.repeat(Schedule.spaced(heartbeatInterval(config.staleSeconds))),
          Effect.delay(heartbeatInterval(config.staleSeconds)),
          Effect.forkScoped
        )

        const ref = yield* Effect.either(accounts.refForOperation("stripe_customer_migration"))
        if (ref._tag === "Left") {
          yield* reportFailed(job, ref.left._tag === "SqlError" ? "database_unavailable" : ref.left.code, ref.left)
          yield* finish("failed", describeError(ref.left))
          return
        }
        let size = firstChunkSize(config)
        let applied = 0
        const statisticsDue = statisticsSchedule()
        /**
         * A page in chunks, in order, each starting from the progress the previous one committed;
         * planner statistics before the first chunk and as the rows applied double (PGlite has no
         * autovacuum; Shared.statisticsSchedule). Ends early at a `fail` conflict.
         */
        const applyPage = (page: StripeCustomerPage) =>
          Effect.gen(function* () {
            for (let from = 0; ; ) {
              if (statisticsDue(applied)) yield* gate.turn(repo.refreshStatistics).pipe(Effect.retry({ schedule: CHUNK_RETRY, while: isInfraError }))
              const customers = page.customers.slice(from, from + size)
              const lastOfPage = from + customers.length >= page.customers.length
              const chunk = { page: { ...page, customers, lastId: lastOfPage ? page.lastId : customers[customers.length - 1]!.id }, lastOfPage }
              const [took, result] = yield* applyChunk({ job, owner, progress, chunk, wouldLink })
              progress = result.next
              if (wouldLink) for (const [k, v] of result.wouldLink) wouldLink.set(k, v)
              size = nextChunkSize(config, size, Duration.toMillis(took))
              applied += customers.length
              from += customers.length
              if (lastOfPage || result.stopped !== undefined) {
                if (onPage) yield* onPage({ ...progress, migrationId: job.id })
                return result
              }
            }
          })
        const pages: Stream.Stream<StripeCustomerPage, StripeError> = stripe.streamCustomerPages(ref.right, progress.cursor ?? undefined)
        const outcome = yield* pages.pipe(
          // Fetch the next page while this one is applied.
          Stream.buffer({ capacity: 1 }),
          // Sequential: each page starts from the progress the previous one committed.
          Stream.mapEffect((page) => Effect.suspend(() => applyPage(page))),
          Stream.takeUntil(({ stopped }) => stopped !== undefined),
          Stream.runLast,
          Effect.exit
        )
        yield* Fiber.interrupt(heartbeat)
        if (Exit.isSuccess(outcome)) {
          const last = Option.getOrUndefined(outcome.value)
          if (last?.stopped !== undefined) {
            yield* migrationErrors("mapping_conflict")
            yield* reportFailed(job, "mapping_conflict", new Error(`migration stopped at a mapping conflict: ${last.stopped}`))
            yield* finish("failed", last.stopped)
          } else yield* finish("completed", null)
          return
        }
        if (Cause.isInterruptedOnly(outcome.cause)) return yield* Effect.interrupt
        const failure = Cause.failureOption(outcome.cause)
        if (Option.isSome(failure) && failure.value instanceof LostClaim) {
          yield* Effect.logWarning("migration taken over by another runner").pipe(Effect.annotateLogs({ migration_id: job.id }))
          return
        }
        const message = Option.match(failure, { onSome: describeError, onNone: () => "internal error: " + Cause.pretty(outcome.cause).split("\n")[0] })
        const code = Option.match(failure, { onSome: (e) => (isStripeError(e) ? e.code : "database_unavailable"), onNone: () => "internal_error" })
        yield* migrationErrors(code)
        yield* reportFailed(job, code, Option.getOrElse(failure as Option.Option<unknown>, () => Cause.squash(outcome.cause)))
        yield* Effect.logError("migration failed", outcome.cause).pipe(Effect.annotateLogs({ migration_id: job.id }))
        yield* finish("failed", message)
      },
      (self, job0, owner) =>
        self.pipe(
          Effect.scoped,
          Effect.onInterrupt(() => repo.release(job0.id, owner).pipe(Effect.ignore)),
          Effect.catchAll((e) => Effect.logError("migration bookkeeping failed", e).pipe(Effect.annotateLogs({ migration_id: job0.id })))
        )
    )

    // ------------------------------------------------------------------ reads

    const mustGet = (id: string) =>
      Effect.flatMap(repo.get(id), Option.match({ onNone: () => Effect.fail(NotFound.of("migration", id)), onSome: Effect.succeed }))

    return {
      start,
      run,
      get: repo.get,
      mustGet,
      list: repo.list,
      findRunning: repo.findRunning,
      claimRunning: repo.claimRunning
    } as const
  })
}) {}

export { MigrationAlreadyRunning }

/**
 * Migration of existing Stripe customers (SPEC §9); CSV imports are in CsvImport.ts, rollbacks in
 * Rollback.ts, verifications in Verify.ts. Every customer and mapping is made by CustomerLinker —
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
import type { LinkManyInput, LinkOutcome } from "../customers/CustomerLinker.js"
import { NotFound } from "../domain/Errors.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { type MappingSnapshot, MigrationAlreadyRunning } from "../repositories/MigrationJobRepo.js"
import type { StripeCustomer, StripeCustomerPage } from "../stripe/StripeClient.js"
import { isStripeError, type StripeError } from "../stripe/StripeErrors.js"
import { firstChunkSize, heartbeatInterval, nextChunkSize } from "./Config.js"
import { MAX_EXTERNAL_ID_LENGTH } from "./CsvMapping.js"
import {
  MAX_PROBLEMS,
  type MigrationCounts,
  type MigrationJob,
  type MigrationOptions,
  type MigrationProblem,
  type MigrationProgress,
  zeroCounts
} from "./Model.js"
import { CHUNK_RETRY, describeError, isInfraError, linkingJobServices, LostClaim, statisticsSchedule } from "./Shared.js"

/** Called after every committed page (CLI progress line, tests). */
export type PageListener = (progress: MigrationProgress & { readonly migrationId: string }) => Effect.Effect<void>

/** metadata.external_id as the migration reads it ("" when absent). */
const externalIdOf = (c: StripeCustomer): string => {
  const raw = c.metadata["external_id"]
  return typeof raw === "string" ? raw.trim() : ""
}

const isLinkableExternalId = (externalId: string) => externalId !== "" && externalId.length <= MAX_EXTERNAL_ID_LENGTH

interface PageState {
  counts: { -readonly [K in keyof MigrationCounts]: MigrationCounts[K] }
  problems: Array<MigrationProblem>
  problemsTotal: number
  entities: Array<{ type: "customer" | "mapping"; id: string }>
  replaced: Array<MappingSnapshot>
  wouldLink: Map<string, string>
  stopped: string | undefined
}

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

    // ------------------------------------------------------------------ one Stripe customer

    const addProblem = (s: PageState, p: MigrationProblem) => {
      s.problemsTotal++
      if (s.problems.length < MAX_PROBLEMS) s.problems.push(p)
    }

    const linkInputOf = (job: MigrationJob, c: StripeCustomer, externalId: string): LinkManyInput => ({
      externalId,
      stripeCustomerId: c.id,
      name: c.name,
      email: c.email,
      source: "migration",
      migrationId: job.id,
      createCustomer: job.options.createMissingCustomers,
      // `fail` is decided here, after recording the conflict, rather than by a linker error.
      onConflict: job.options.conflictStrategy === "overwrite" ? "overwrite" : "skip",
      dryRun: job.dryRun
    })

    /**
     * Account for one Stripe customer of the page, in page order: its external_id problems, the
     * dry run's memory of this run, and `outcome`, what the linker answered for it (undefined
     * when it was not linkable).
     */
    const accountOne = (
      job: MigrationJob,
      s: PageState,
      before: ReadonlyArray<MappingSnapshot>,
      c: StripeCustomer,
      outcome: LinkOutcome | undefined,
      wouldLinkGlobal: Map<string, string> | undefined
    ) =>
      Effect.gen(function* () {
        s.counts.seen++
        const externalId = externalIdOf(c)
        if (externalId === "") {
          s.counts.missing_external_id++
          addProblem(s, { stripe_customer_id: c.id, code: "missing_external_id", message: "the Stripe customer has no metadata.external_id" })
          return
        }
        if (externalId.length > MAX_EXTERNAL_ID_LENGTH) {
          s.counts.failed++
          addProblem(s, {
            stripe_customer_id: c.id,
            external_id: externalId.slice(0, 64),
            code: "invalid_external_id",
            message: `metadata.external_id is longer than ${MAX_EXTERNAL_ID_LENGTH} characters`
          })
          return
        }
        const strategy = job.options.conflictStrategy
        const conflict = (conflictWith: LinkOutcome["conflictWith"]) => {
          s.counts.conflicts++
          const with_ = { customer_id: conflictWith?.customerId, stripe_customer_id: conflictWith?.stripeCustomerId }
          addProblem(s, {
            stripe_customer_id: c.id,
            external_id: externalId,
            code: "conflict",
            message:
              conflictWith?.stripeCustomerId !== undefined
                ? `external_id ${externalId} is already mapped to Stripe customer ${conflictWith.stripeCustomerId}`
                : `Stripe customer ${c.id} is already mapped to customer ${conflictWith?.customerId ?? "?"}`,
            conflict_with: with_
          })
          if (strategy === "fail") s.stopped = `conflict: Stripe customer ${c.id} (external_id ${externalId}) is already mapped differently`
        }

        // Dry run: an earlier row of this run would already have mapped this external_id.
        if (job.dryRun) {
          const prior = s.wouldLink.get(externalId) ?? wouldLinkGlobal?.get(externalId)
          if (prior !== undefined && prior !== c.id) {
            if (strategy !== "overwrite") return conflict({ stripeCustomerId: prior })
            s.counts.mapped++
            s.wouldLink.set(externalId, c.id)
            addProblem(s, {
              stripe_customer_id: c.id,
              external_id: externalId,
              code: "overwritten",
              message: `would replace the mapping to ${prior}`,
              conflict_with: { stripe_customer_id: prior }
            })
            return
          }
        }

        // linkMany stops after a `fail` conflict, and so does the page loop: every row reached was linked.
        if (outcome === undefined) return yield* Effect.dieMessage(`Stripe customer ${c.id} was not linked`)
        if (outcome.customerCreated && !job.dryRun && outcome.customerId !== null) s.entities.push({ type: "customer", id: outcome.customerId })
        switch (outcome.mapping) {
          case "created":
          case "updated": {
            s.counts.mapped++
            if (outcome.customerCreated) s.counts.created++
            if (job.dryRun) s.wouldLink.set(externalId, c.id)
            if (outcome.mappingId !== undefined && !job.dryRun) s.entities.push({ type: "mapping", id: outcome.mappingId })
            if (outcome.mapping === "updated" && !job.dryRun) {
              // The rows this link reassigned or removed, as they were before this migration.
              for (const row of before)
                if ((row.providerCustomerId === c.id || row.customerId === outcome.customerId) && row.migrationId !== job.id) s.replaced.push(row)
            }
            if (outcome.conflictWith !== undefined)
              addProblem(s, {
                stripe_customer_id: c.id,
                external_id: externalId,
                code: "overwritten",
                message: "replaced a conflicting mapping (conflict_strategy=overwrite)",
                conflict_with: { customer_id: outcome.conflictWith.customerId, stripe_customer_id: outcome.conflictWith.stripeCustomerId }
              })
            return
          }
          case "unchanged":
            s.counts.already_mapped++
            return
          case "conflict":
            if (outcome.customerCreated && !job.dryRun) s.counts.created++
            return conflict(outcome.conflictWith)
          case "customer_missing":
            s.counts.customer_missing++
            addProblem(s, {
              stripe_customer_id: c.id,
              external_id: externalId,
              code: "customer_missing",
              message: `no customer with external_id ${externalId} (create_missing_customers=false)`
            })
            return
        }
      })

    // ------------------------------------------------------------------ pages

    const freshState = (p: MigrationProgress): PageState => ({
      counts: { ...p.counts },
      problems: [...p.problems],
      problemsTotal: p.problemsTotal,
      entities: [],
      replaced: [],
      wouldLink: new Map(),
      stopped: undefined
    })

    /**
     * Apply a chunk of a page (all of it, or a slice) in one transaction: cursor, counts and
     * created entities included; `pages` counts up with the page's last chunk. Stamped as one
     * in-flight ingest, so the sync watermark stays below the processed rows written for pending
     * events until the chunk commits. Answers how long the chunk took, with its result.
     */
    const applyChunk = (
      job: MigrationJob,
      owner: string,
      progress: MigrationProgress,
      chunk: { readonly page: StripeCustomerPage; readonly lastOfPage: boolean },
      wouldLink: Map<string, string> | undefined
    ) => {
      const page = chunk.page
      return gate.timedTurn(watermark.stamped(() =>
        sql.withTransaction(
          Effect.gen(function* () {
            const s = freshState(progress)
            const ids = page.customers.map((c) => c.id)
            const externalIds = page.customers.map(externalIdOf).filter(isLinkableExternalId)
            const { snapshots: before, externalIdOfCustomer } = yield* repo.mappingsTouching(ids, externalIds)
            // Already mapped exactly like this (re-runs, resumed jobs): the answer is known
            // without a link, unless an earlier row of this page touched the same external_id.
            const unchanged = new Set(
              before
                .filter((m) => m.status === "active" && externalIdOfCustomer.has(m.customerId))
                .map((m) => `${externalIdOfCustomer.get(m.customerId)}\u0000${m.providerCustomerId}`)
            )
            const touched = new Set<string>()
            const rows: Array<{ readonly c: StripeCustomer; readonly known: boolean; readonly linkAt?: number }> = []
            const toLink: Array<LinkManyInput> = []
            for (const c of page.customers) {
              const ext = externalIdOf(c)
              if (isLinkableExternalId(ext) && !touched.has(ext) && unchanged.has(`${ext}\u0000${c.id}`)) {
                rows.push({ c, known: true })
                continue
              }
              touched.add(ext)
              if (!isLinkableExternalId(ext)) rows.push({ c, known: false })
              else {
                rows.push({ c, known: false, linkAt: toLink.length })
                toLink.push(linkInputOf(job, c, ext))
              }
            }
            // The whole page in a constant number of statements; outcome i is what linking the
            // customers one by one in page order would have answered.
            const outcomes = yield* linker.linkMany(toLink, { stopAtConflict: job.options.conflictStrategy === "fail" })
            for (const row of rows) {
              if (row.known) {
                s.counts.seen++
                s.counts.already_mapped++
                continue
              }
              yield* accountOne(job, s, before, row.c, row.linkAt === undefined ? undefined : outcomes[row.linkAt], wouldLink)
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
      )).pipe(
        Effect.retry({ schedule: CHUNK_RETRY, while: (e) => isInfraError(e) }),
        Effect.withSpan("migration.page", { attributes: { "migration.id": job.id, "migration.page_size": page.customers.length } })
      )
    }

    const progressOf = (job: MigrationJob): MigrationProgress => ({
      cursor: job.cursor,
      pages: job.pages,
      counts: job.counts,
      problems: job.problems,
      problemsTotal: job.problemsTotal
    })

    /** Creates the job row (409-style MigrationAlreadyRunning when one runs here). */
    const start = (options: MigrationOptions, owner: string) =>
      repo.create({ kind: "stripe_customers", options, claimedBy: owner }).pipe(Effect.withSpan("migration.start"))

    /**
     * Run a claimed job to its end from its saved cursor. Interruption (shutdown) releases the
     * claim so the next runner resumes at once; the page in flight rolls back.
     */
    const run = (job0: MigrationJob, owner: string, onPage?: PageListener) =>
      Effect.gen(function* () {
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
              const [took, result] = yield* applyChunk(job, owner, progress, chunk, wouldLink)
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
      }).pipe(
        Effect.scoped,
        Effect.onInterrupt(() => repo.release(job0.id, owner).pipe(Effect.ignore)),
        Effect.catchAll((e) => Effect.logError("migration bookkeeping failed", e).pipe(Effect.annotateLogs({ migration_id: job0.id }))),
        Effect.withSpan("migration.run", { attributes: { "migration.id": job0.id, "migration.dry_run": job0.dryRun } })
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

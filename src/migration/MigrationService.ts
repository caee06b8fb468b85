/**
 * Migration of existing Stripe customers, bulk CSV mapping, rollback and verification
 * (SPEC §9). Every customer and mapping is made by CustomerLinker — a Stripe page, or a CSV
 * file's rows, at once with `linkMany`; webhooks use `link`, one customer; both decide through the
 * same rules (LinkRules), so conflict rules and pending-event processing are the same everywhere.
 *
 * Resumability: each Stripe page (100 customers) is applied in ONE database transaction that
 * also saves the cursor, the counts and the entities created. A crash or interruption at any
 * instant loses at most the page in flight, whose transaction rolls back; the job then resumes
 * after the last committed page and ends in exactly the state (and counts) of an uninterrupted
 * run. Stripe pages are fetched outside the transaction.
 *
 * Dry run: the linker is asked what it would do and nothing is written but the job row. What an
 * earlier row of the same run "would have created" is remembered in memory, so a later duplicate
 * of an external_id is reported as the conflict a real run would meet. That memory dies with the
 * process, so a resumed dry run starts again from the first page (it wrote nothing anyway).
 */
import type { SqlError } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Cause, Effect, Exit, Fiber, Metric, MetricLabel, Option, Schedule, Stream } from "effect"
import { CustomerLinker, type LinkManyInput, type LinkOutcome } from "../customers/CustomerLinker.js"
import { Conflict, InvalidInput, NotFound } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { EventStore, type EventStoreError } from "../events/EventStore.js"
import { IngestWatermark } from "../events/IngestWatermark.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { CustomerRepo } from "../repositories/CustomerRepo.js"
import { type MappingSnapshot, MigrationAlreadyRunning, MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient, type StripeCustomer, type StripeCustomerPage } from "../stripe/StripeClient.js"
import { isStripeError, type StripeError } from "../stripe/StripeErrors.js"
import { type CsvMappingRow, type CsvRowProblem, MAX_EXTERNAL_ID_LENGTH, parseCsvMapping } from "./CsvMapping.js"
import {
  type ConflictStrategy,
  MAX_PROBLEMS,
  type MigrationCounts,
  type MigrationJob,
  type MigrationOptions,
  type MigrationProblem,
  type MigrationProgress,
  type RollbackReport,
  zeroCounts
} from "./Model.js"

/** Called after every committed page (CLI progress line, tests). */
export type PageListener = (progress: MigrationProgress & { readonly migrationId: string }) => Effect.Effect<void>

export interface CsvImportOptions {
  readonly verify: boolean
  readonly allOrNothing: boolean
  readonly dryRun: boolean
  readonly createMissingCustomers: boolean
  readonly conflictStrategy: ConflictStrategy
}

export interface CsvImportResult {
  readonly migrationId: string
  readonly status: "completed" | "failed"
  readonly dryRun: boolean
  readonly totalRows: number
  /** Rows that passed every check (applied, or would be in a dry run / all-or-nothing refusal). */
  readonly validRows: number
  readonly applied: boolean
  readonly counts: { readonly mapped: number; readonly created: number; readonly already_mapped: number; readonly overwritten: number }
  readonly badRows: ReadonlyArray<CsvRowProblem>
  readonly warnings: ReadonlyArray<CsvRowProblem>
}

export interface VerifyMismatch {
  readonly mappingId: string
  readonly customerId: string | null
  readonly externalId: string | null
  readonly stripeCustomerId: string | null
  readonly problem:
    | "mapping_removed"
    | "stripe_customer_not_found"
    | "stripe_customer_deleted"
    | "external_id_missing"
    | "external_id_mismatch"
    | "stripe_check_failed"
  readonly detail: string
}

export interface VerifyResult {
  readonly migrationId: string
  readonly checked: number
  readonly ok: number
  readonly mismatches: ReadonlyArray<VerifyMismatch>
}

/** Codes that make a CSV row bad; the others are warnings (an exact repeat is applied once). */
const WARNING_CODES = new Set<CsvRowProblem["code"]>(["duplicate_row"])

const PAGE_RETRY = Schedule.exponential("200 millis").pipe(Schedule.intersect(Schedule.recurs(4)))

const isInfraError = (e: unknown): e is SqlError.SqlError | EventStoreError =>
  typeof e === "object" && e !== null && "_tag" in e && (e._tag === "SqlError" || e._tag === "EventStoreError")

const describeError = (e: unknown): string => {
  if (isStripeError(e)) return `${e.code}: ${e.message}`
  if (typeof e === "object" && e !== null && "code" in e && "message" in e) return `${String(e.code)}: ${String(e.message)}`
  if (typeof e === "object" && e !== null && "_tag" in e) return String((e as { _tag: unknown })._tag) + (e instanceof Error ? `: ${e.message}` : "")
  return String(e)
}

/** metadata.external_id as the migration reads it ("" when absent). */
const externalIdOf = (c: StripeCustomer): string => {
  const raw = c.metadata["external_id"]
  return typeof raw === "string" ? raw.trim() : ""
}

const isLinkableExternalId = (externalId: string) => externalId !== "" && externalId.length <= MAX_EXTERNAL_ID_LENGTH

/** Another process took the job over (it stopped heartbeating in time). */
class LostClaim {
  readonly _tag = "LostClaim"
}

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
    const sql = yield* PgClient.PgClient
    const repo = yield* MigrationJobRepo
    const linker = yield* CustomerLinker
    const accounts = yield* StripeAccounts
    const stripe = yield* StripeClient
    const store = yield* EventStore
    const customers = yield* CustomerRepo
    const watermark = yield* IngestWatermark

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
     * Apply one page in one transaction (cursor, counts and created entities included). Stamped
     * as one in-flight ingest, so the sync watermark stays below the processed rows written for
     * pending events until the page commits.
     */
    const applyPage = (job: MigrationJob, owner: string, progress: MigrationProgress, page: StripeCustomerPage, wouldLink: Map<string, string> | undefined) =>
      watermark.stamped(() =>
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
              // A page cut short by a `fail` conflict is not complete: the cursor stays.
              cursor: s.stopped === undefined ? (page.lastId ?? progress.cursor) : progress.cursor,
              pages: s.stopped === undefined ? progress.pages + 1 : progress.pages,
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
      ).pipe(
        Effect.retry({ schedule: PAGE_RETRY, while: (e) => isInfraError(e) }),
        Effect.withSpan("migration.page", { attributes: { "migration.id": job.id, "migration.page_size": page.customers.length } })
      )

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
          repo.finish(job.id, owner, status, error, progress).pipe(Effect.retry({ schedule: PAGE_RETRY, while: isInfraError }))

        // Keep the claim fresh while a page waits on Stripe (rate limits, retries).
        const heartbeat = yield* repo.heartbeat(job.id, owner).pipe(
          Effect.ignore,
          Effect.repeat(Schedule.spaced("10 seconds")),
          Effect.delay("10 seconds"),
          Effect.forkScoped
        )

        const ref = yield* Effect.either(accounts.refForOperation("stripe_customer_migration"))
        if (ref._tag === "Left") {
          yield* reportFailed(job, ref.left._tag === "SqlError" ? "database_unavailable" : ref.left.code, ref.left)
          yield* finish("failed", describeError(ref.left))
          return
        }
        const pages: Stream.Stream<StripeCustomerPage, StripeError> = stripe.streamCustomerPages(ref.right, progress.cursor ?? undefined)
        const outcome = yield* pages.pipe(
          // Fetch the next page while this one is applied.
          Stream.buffer({ capacity: 1 }),
          // Sequential: each page starts from the progress the previous one committed.
          Stream.mapEffect((page) =>
            Effect.suspend(() => applyPage(job, owner, progress, page, wouldLink)).pipe(
              Effect.tap(({ next, wouldLink: staged }) =>
                Effect.gen(function* () {
                  progress = next
                  if (wouldLink) for (const [k, v] of staged) wouldLink.set(k, v)
                  if (onPage) yield* onPage({ ...next, migrationId: job.id })
                })
              )
            )
          ),
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

    // ------------------------------------------------------------------ rollback

    /**
     * Remove what the migration created and put back what it replaced, in one transaction.
     * Customers it created are kept (and reported) when they have events, or when something
     * else has mapped them since; everything else it made goes.
     */
    const rollback = (id: string) =>
      Effect.gen(function* () {
        const job = yield* mustGet(id)
        if (job.status === "running")
          return yield* Conflict.of("migration_running", `migration ${id} is still running`, { running_id: id })
        if (job.status === "rolled_back") return yield* Conflict.of("already_rolled_back", `migration ${id} was already rolled back`, { migration_id: id })
        const scope = yield* CurrentTenant
        const report = yield* watermark.stamped(() =>
          sql.withTransaction(
            Effect.gen(function* () {
              const entities = yield* repo.createdEntities(id)
              const mappingIds = entities.filter((e) => e.entityType === "mapping").map((e) => e.entityId)
              const customerIds = entities.filter((e) => e.entityType === "customer").map((e) => e.entityId)
              let mappingsRemoved = 0
              for (let i = 0; i < mappingIds.length; i += 1000) mappingsRemoved += yield* repo.deleteMappings(id, mappingIds.slice(i, i + 1000))
              let mappingsRestored = 0
              for (const snapshot of yield* repo.replacedMappings(id)) if (yield* repo.restoreMapping(snapshot)) mappingsRestored++
              const kept: Array<RollbackReport["customers_kept"][number]> = []
              let customersRemoved = 0
              for (let i = 0; i < customerIds.length; i += 1000) {
                const chunk = customerIds.slice(i, i + 1000)
                const mapped = yield* repo.customersMappedElsewhere(id, chunk)
                for (const customerId of chunk) {
                  const customer = yield* customers.findById(customerId)
                  if (Option.isNone(customer)) continue
                  const externalId = customer.value.externalId
                  if (mapped.has(customerId)) {
                    kept.push({ customer_id: customerId, external_id: externalId, reason: "mapped_since" })
                    continue
                  }
                  const events = yield* store.listEvents({ scope, externalCustomerId: externalId, limit: 1 })
                  if (events.events.length > 0) {
                    kept.push({ customer_id: customerId, external_id: externalId, reason: "has_events" })
                    continue
                  }
                  if (yield* customers.remove(customerId)) customersRemoved++
                }
              }
              const report: RollbackReport = {
                rolled_back_at: new Date().toISOString(),
                mappings_removed: mappingsRemoved,
                mappings_restored: mappingsRestored,
                customers_removed: customersRemoved,
                customers_kept: kept
              }
              const marked = yield* repo.markRolledBack(id, report)
              if (!marked) return yield* Conflict.of("migration_state_changed", `migration ${id} changed while rolling back; retry`)
              return report
            })
          )
        )
        yield* Effect.logInfo("migration rolled back").pipe(
          Effect.annotateLogs({ migration_id: id, mappings_removed: report.mappings_removed, customers_removed: report.customers_removed })
        )
        return report
      }).pipe(Effect.withSpan("migration.rollback", { attributes: { "migration.id": id } }))

    // ------------------------------------------------------------------ verify

    const verify = (id: string) =>
      Effect.gen(function* () {
        const job = yield* mustGet(id)
        const mappings = yield* repo.mappingsOf(job.id)
        const ref = yield* accounts.refForOperation("stripe_migration_verify")
        const mismatches: Array<VerifyMismatch> = []
        let ok = 0
        const results = yield* Effect.forEach(
          mappings,
          (m) =>
            Effect.gen(function* () {
              const base = { mappingId: m.mappingId, customerId: m.customerId || null, externalId: m.externalId, stripeCustomerId: m.providerCustomerId }
              if (!m.stillOurs || m.providerCustomerId === null)
                return Option.some<VerifyMismatch>({ ...base, problem: "mapping_removed", detail: "the mapping was removed or rewritten since the migration" })
              const found = yield* Effect.either(stripe.retrieveCustomer(ref, m.providerCustomerId))
              if (found._tag === "Left") {
                const e = found.left
                if (e._tag === "StripeInvalidRequest" && e.status === 404)
                  return Option.some<VerifyMismatch>({ ...base, problem: "stripe_customer_not_found", detail: "Stripe has no such customer" })
                return Option.some<VerifyMismatch>({ ...base, problem: "stripe_check_failed", detail: describeError(e) })
              }
              const c = found.right
              if (c.deleted) return Option.some<VerifyMismatch>({ ...base, problem: "stripe_customer_deleted", detail: "the Stripe customer was deleted" })
              const ext = c.metadata["external_id"]
              if (ext === undefined || ext.trim() === "")
                return Option.some<VerifyMismatch>({ ...base, problem: "external_id_missing", detail: "the Stripe customer has no metadata.external_id" })
              if (ext.trim() !== m.externalId)
                return Option.some<VerifyMismatch>({ ...base, problem: "external_id_mismatch", detail: `Stripe metadata.external_id is ${ext.trim()}` })
              return Option.none<VerifyMismatch>()
            }),
          { concurrency: 8 }
        )
        for (const r of results) if (Option.isSome(r)) mismatches.push(r.value)
        ok = results.length - mismatches.length
        return { migrationId: job.id, checked: mappings.length, ok, mismatches } satisfies VerifyResult
      }).pipe(Effect.withSpan("migration.verify", { attributes: { "migration.id": id } }))

    // ------------------------------------------------------------------ CSV

    /**
     * Validate every row (file checks, then existing mappings via a dry-run link, optionally Stripe),
     * then apply the good rows in one transaction — or none with `allOrNothing` when any is bad.
     */
    const importCsv = (text: string, options: CsvImportOptions, owner: string) =>
      Effect.gen(function* () {
        const parsed = parseCsvMapping(text)
        if (parsed._tag === "Left") return yield* InvalidInput.of(parsed.left.code, parsed.left.message)
        const file = parsed.right
        const job = yield* repo.create({
          kind: "csv",
          options: { dryRun: options.dryRun, createMissingCustomers: options.createMissingCustomers, conflictStrategy: options.conflictStrategy },
          claimedBy: owner
        })
        const body = Effect.gen(function* () {
          const bad: Array<CsvRowProblem> = file.problems.filter((p) => !WARNING_CODES.has(p.code))
          const warnings: Array<CsvRowProblem> = file.problems.filter((p) => WARNING_CODES.has(p.code))
          let candidates: ReadonlyArray<CsvMappingRow> = file.rows

          if (options.verify && candidates.length > 0) {
            const ref = yield* accounts.refForOperation("stripe_csv_verify")
            const checks = yield* Effect.forEach(candidates, (r) => Effect.either(stripe.retrieveCustomer(ref, r.stripeCustomerId)), { concurrency: 8 })
            const kept: Array<CsvMappingRow> = []
            checks.forEach((check, i) => {
              const r = candidates[i]!
              const ids = { line: r.line, externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
              if (check._tag === "Right") {
                if (check.right.deleted) bad.push({ ...ids, code: "stripe_customer_deleted", reason: "the Stripe customer was deleted" })
                else kept.push(r)
              } else if (check.left._tag === "StripeInvalidRequest" && check.left.status === 404)
                bad.push({ ...ids, code: "stripe_customer_not_found", reason: `Stripe has no customer ${r.stripeCustomerId}` })
              else bad.push({ ...ids, code: "stripe_check_failed", reason: describeError(check.left) })
            })
            candidates = kept
          }

          // Conflicts with what is stored, as the linker itself decides them.
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
          // One batch (a dry run: each row decided against what is stored, as `link` would).
          const decided = yield* linker.linkMany(candidates.map((r) => linkInput(r, true)))
          const good: Array<CsvMappingRow> = []
          const wouldBe: Array<LinkOutcome> = []
          for (const [i, r] of candidates.entries()) {
            const o = decided[i]!
            const ids = { line: r.line, externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
            if (o.mapping === "conflict")
              bad.push({
                ...ids,
                code: "conflict",
                reason:
                  o.conflictWith?.stripeCustomerId !== undefined
                    ? `external_id ${r.externalId} is already mapped to Stripe customer ${o.conflictWith.stripeCustomerId}`
                    : `Stripe customer ${r.stripeCustomerId} is already mapped to customer ${o.conflictWith?.customerId ?? "?"}`
              })
            else if (o.mapping === "customer_missing")
              bad.push({ ...ids, code: "customer_missing", reason: `no customer with external_id ${r.externalId} (create_missing_customers=false)` })
            else {
              good.push(r)
              wouldBe.push(o)
            }
          }
          bad.sort((a, b) => a.line - b.line)

          const counts = { mapped: 0, created: 0, already_mapped: 0, overwritten: 0 }
          const apply = !options.dryRun && !(options.allOrNothing && bad.length > 0)
          const entities: Array<{ type: "customer" | "mapping"; id: string }> = []
          const replaced: Array<MappingSnapshot> = []
          const tally = (o: LinkOutcome) => {
            if (o.mapping === "created" || o.mapping === "updated") counts.mapped++
            if (o.mapping === "unchanged") counts.already_mapped++
            if (o.customerCreated && (o.mapping === "created" || o.mapping === "updated")) counts.created++
            if (o.conflictWith !== undefined && o.mapping === "updated") counts.overwritten++
          }
          if (apply && good.length > 0) {
            yield* watermark.stamped(() =>
              sql.withTransaction(
                Effect.gen(function* () {
                  const { snapshots: before } = yield* repo.mappingsTouching(
                    good.map((r) => r.stripeCustomerId),
                    good.map((r) => r.externalId)
                  )
                  const outcomes = yield* linker.linkMany(good.map((r) => linkInput(r, false)))
                  for (const [i, r] of good.entries()) {
                    const o = outcomes[i]!
                    tally(o)
                    if (o.customerCreated && o.customerId !== null) entities.push({ type: "customer", id: o.customerId })
                    if ((o.mapping === "created" || o.mapping === "updated") && o.mappingId !== undefined) entities.push({ type: "mapping", id: o.mappingId })
                    if (o.mapping === "updated")
                      for (const row of before)
                        if ((row.providerCustomerId === r.stripeCustomerId || row.customerId === o.customerId) && row.migrationId !== job.id) replaced.push(row)
                    if (o.mapping === "conflict")
                      return yield* Conflict.of("mapping_conflict", `line ${r.line}: the mapping changed while importing; nothing was applied`, { line: r.line })
                  }
                  for (let i = 0; i < entities.length; i += 1000) yield* repo.recordEntities(job.id, entities.slice(i, i + 1000))
                  for (let i = 0; i < replaced.length; i += 1000) yield* repo.recordReplaced(job.id, replaced.slice(i, i + 1000))
                })
              )
            )
          } else {
            // Report what would happen (dry run or all-or-nothing refusal) from the dry-run links.
            for (const o of wouldBe) tally(o)
          }
          const problems: Array<MigrationProblem> = bad.slice(0, MAX_PROBLEMS).map((p) => ({
            stripe_customer_id: p.stripeCustomerId ?? "",
            external_id: p.externalId,
            code: p.code === "conflict" ? "conflict" : p.code === "customer_missing" ? "customer_missing" : "failed",
            message: `line ${p.line}: ${p.reason}`,
            line: p.line
          }))
          const progress: MigrationProgress = {
            cursor: null,
            pages: 0,
            counts: {
              ...zeroCounts,
              seen: file.totalRows,
              mapped: apply ? counts.mapped : 0,
              created: apply ? counts.created : 0,
              already_mapped: counts.already_mapped,
              conflicts: bad.filter((b) => b.code === "conflict").length,
              missing_external_id: bad.filter((b) => b.code === "missing_external_id").length,
              customer_missing: bad.filter((b) => b.code === "customer_missing").length,
              failed: bad.filter((b) => b.code !== "conflict" && b.code !== "missing_external_id" && b.code !== "customer_missing").length
            },
            problems,
            problemsTotal: bad.length
          }
          const refused = !options.dryRun && !apply
          const status = refused ? ("failed" as const) : ("completed" as const)
          yield* repo.finish(job.id, owner, status, refused ? `all_or_nothing: nothing applied because ${bad.length} row(s) are bad` : null, progress)
          return {
            migrationId: job.id,
            status,
            dryRun: options.dryRun,
            totalRows: file.totalRows,
            validRows: good.length,
            applied: apply && good.length > 0,
            counts,
            badRows: bad,
            warnings
          } satisfies CsvImportResult
        })
        return yield* body.pipe(
          Effect.onExit((exit) =>
            Exit.isSuccess(exit)
              ? Effect.void
              : repo
                  .finish(
                    job.id,
                    owner,
                    "failed",
                    Exit.isInterrupted(exit) ? "interrupted" : Option.match(Cause.failureOption(exit.cause), { onSome: describeError, onNone: () => "internal error" }),
                    { cursor: null, pages: 0, counts: zeroCounts, problems: [], problemsTotal: 0 }
                  )
                  .pipe(Effect.ignore)
          )
        )
      }).pipe(Effect.withSpan("migration.csv_import", { attributes: { "csv.bytes": text.length } }))

    return {
      start,
      run,
      get: repo.get,
      mustGet,
      list: repo.list,
      findRunning: repo.findRunning,
      claimRunning: repo.claimRunning,
      rollback,
      verify,
      importCsv
    } as const
  })
}) {}

export { MigrationAlreadyRunning }

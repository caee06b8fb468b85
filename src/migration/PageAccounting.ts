/**
 * How one Stripe page of a customer migration is accounted (MigrationService applies it): which of
 * its customers are already mapped exactly so, which go to the linker and in what form, and what
 * each customer adds to the job's counts, problems, created entities and replaced mappings once the
 * linker has answered. Accounting is in page order and mirrors what linking the customers one by
 * one would record, dry runs included (their memory of what this run "would have linked").
 */
import { Effect } from "effect"
import type { LinkManyInput, LinkOutcome } from "../customers/CustomerLinker.js"
import type { MappingSnapshot } from "../repositories/MigrationJobRepo.js"
import type { StripeCustomer } from "../stripe/StripeClient.js"
import { MAX_EXTERNAL_ID_LENGTH } from "./CsvMapping.js"
import { MAX_PROBLEMS, type MigrationCounts, type MigrationJob, type MigrationProblem, type MigrationProgress } from "./Model.js"

/** metadata.external_id as the migration reads it ("" when absent). */
export const externalIdOf = (c: StripeCustomer): string => {
  const raw = c.metadata["external_id"]
  return typeof raw === "string" ? raw.trim() : ""
}

export const isLinkableExternalId = (externalId: string) => externalId !== "" && externalId.length <= MAX_EXTERNAL_ID_LENGTH

/** What a chunk of a page adds up to while it is accounted, from the progress before it. */
export interface PageState {
  counts: { -readonly [K in keyof MigrationCounts]: MigrationCounts[K] }
  problems: Array<MigrationProblem>
  problemsTotal: number
  entities: Array<{ type: "customer" | "mapping"; id: string }>
  replaced: Array<MappingSnapshot>
  wouldLink: Map<string, string>
  stopped: string | undefined
}

export const freshState = (p: MigrationProgress): PageState => ({
  counts: { ...p.counts },
  problems: [...p.problems],
  problemsTotal: p.problemsTotal,
  entities: [],
  replaced: [],
  wouldLink: new Map(),
  stopped: undefined
})

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

/** One customer of the page: `known` = already mapped exactly so; `linkAt` = its index in `toLink`. */
export interface PlannedRow {
  readonly c: StripeCustomer
  readonly known: boolean
  readonly linkAt?: number
}

/**
 * Which customers of the page need the linker. Already mapped exactly like this (re-runs, resumed
 * jobs): the answer is known without a link, unless an earlier row of this page touched the same
 * external_id.
 */
export const planPage = (
  job: MigrationJob,
  customers: ReadonlyArray<StripeCustomer>,
  mapped: { readonly before: ReadonlyArray<MappingSnapshot>; readonly externalIdOfCustomer: ReadonlyMap<string, string> }
): { readonly rows: ReadonlyArray<PlannedRow>; readonly toLink: ReadonlyArray<LinkManyInput> } => {
  const unchanged = new Set(
    mapped.before
      .filter((m) => m.status === "active" && mapped.externalIdOfCustomer.has(m.customerId))
      .map((m) => `${mapped.externalIdOfCustomer.get(m.customerId)}\u0000${m.providerCustomerId}`)
  )
  const touched = new Set<string>()
  const rows: Array<PlannedRow> = []
  const toLink: Array<LinkManyInput> = []
  for (const c of customers) {
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
  return { rows, toLink }
}

/**
 * Account for one Stripe customer of the page, in page order: its external_id problems, the
 * dry run's memory of this run, and `outcome`, what the linker answered for it (undefined
 * when it was not linkable). `before` are the mappings the page touched as they were before it;
 * `wouldLinkGlobal` the dry run's memory of the earlier pages.
 */
export const accountOne = (input: {
  readonly job: MigrationJob
  readonly state: PageState
  readonly before: ReadonlyArray<MappingSnapshot>
  readonly customer: StripeCustomer
  readonly outcome: LinkOutcome | undefined
  readonly wouldLinkGlobal: Map<string, string> | undefined
}) =>
  Effect.gen(function* () {
    const { job, state: s, before, customer: c, outcome, wouldLinkGlobal } = input
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

/**
 * THE one place that finds-or-creates customers and their Stripe mappings. Webhooks link one
 * customer at a time (`link`); the Stripe customer migration (a page at a time) and the CSV
 * import (a file at a time) use `linkMany`. Both decide through LinkRules (conflict rules in its header), so the outcome
 * for a customer is the same whichever path links it; `fail` fails `link` with Conflict
 * `mapping_conflict`.
 *
 * Customers are created through CustomerService, which processes their pending events.
 * A concurrent writer (e.g. customer.created and customer.updated delivered together) makes an
 * insert lose on a unique key; the whole decision is then re-run on fresh reads.
 */
import { PgClient } from "@effect/sql-pg"
import { Data, Effect, Either, Metric, Option } from "effect"
import { Conflict } from "../domain/Errors.js"
import { type CustomerId, newId } from "../domain/Ids.js"
import * as Metrics from "../observability/Metrics.js"
import {
  CustomerMappingRepo,
  type CustomerMappingRow,
  type MappingSource,
  type NewCustomerMapping
} from "../repositories/CustomerMappingRepo.js"
import { CustomerRepo, type NewCustomer } from "../repositories/CustomerRepo.js"
import { CustomerService } from "./CustomerService.js"
import { decideMapping, decideWithoutCustomer, type LinkInput, type LinkOutcome, type MappingWrite, type StoredMapping } from "./LinkRules.js"

export type { LinkInput, LinkOutcome } from "./LinkRules.js"

/** A `linkMany` input: `fail` has no per-customer meaning in a batch (see `stopAtConflict`). */
export type LinkManyInput = LinkInput & { readonly onConflict: "skip" | "overwrite" }

/** What `link` can fail with: database / event store errors, and Conflict `mapping_conflict` with onConflict "fail". */
export type LinkError = Conflict | import("@effect/sql").SqlError.SqlError | import("../events/EventStore.js").EventStoreError

/** A concurrent writer kept winning the unique keys; the caller may retry. */
class LostRace extends Data.TaggedError("LostRace")<{}> {}

const isUniqueViolation = (e: unknown): boolean =>
  (e as { _tag?: string })._tag === "SqlError" && (e as { cause?: { code?: string } }).cause?.code === "23505"

type MappingPatch = { readonly customerId: string; readonly providerCustomerId: string; readonly source: MappingSource; readonly migrationId: string | null }

const patchOf = (input: LinkInput, customerId: string): MappingPatch => ({
  customerId,
  providerCustomerId: input.stripeCustomerId,
  source: input.source as MappingSource,
  migrationId: input.migrationId ?? null
})

/** The mapping rows a batch read, kept up to date with the writes it decides, in order. */
class MappingIndex {
  private readonly rows = new Map<string, StoredMapping>()
  private readonly idByCustomer = new Map<string, string>()
  private readonly idByStripe = new Map<string, string>()
  constructor(rows: Iterable<StoredMapping>) {
    for (const r of rows) this.put(r)
  }
  put(row: StoredMapping) {
    this.remove(row.id)
    this.rows.set(row.id, row)
    this.idByCustomer.set(row.customerId, row.id)
    this.idByStripe.set(row.providerCustomerId, row.id)
  }
  remove(id: string) {
    const row = this.rows.get(id)
    if (row === undefined) return
    this.rows.delete(id)
    if (this.idByCustomer.get(row.customerId) === id) this.idByCustomer.delete(row.customerId)
    if (this.idByStripe.get(row.providerCustomerId) === id) this.idByStripe.delete(row.providerCustomerId)
  }
  byCustomer(customerId: string): Option.Option<StoredMapping> {
    return Option.fromNullable(this.rows.get(this.idByCustomer.get(customerId) ?? ""))
  }
  byStripe(stripeCustomerId: string): Option.Option<StoredMapping> {
    return Option.fromNullable(this.rows.get(this.idByStripe.get(stripeCustomerId) ?? ""))
  }
}

/** A batch's mapping writes, in the order its decisions made them. */
type MappingOp =
  | { readonly _tag: "Insert"; readonly row: NewCustomerMapping & { readonly id: string } }
  | { readonly _tag: "Reassign"; readonly write: Extract<MappingWrite, { _tag: "Reassign" }>; readonly patch: MappingPatch }

export class CustomerLinker extends Effect.Service<CustomerLinker>()("flexprice/CustomerLinker", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const customers = yield* CustomerRepo
    const customerService = yield* CustomerService
    const mappings = yield* CustomerMappingRepo

    /** Make a mapping write; None when the row to reassign is gone (a concurrent writer: re-read). */
    const writeMapping = (write: MappingWrite, patch: MappingPatch) =>
      Effect.gen(function* () {
        if (write._tag === "Insert") return yield* mappings.insert({ ...patch, metadata: {} })
        if (write.removeFirst !== null) yield* mappings.removeById(write.removeFirst)
        return yield* mappings.reassign(write.id, patch)
      })

    // a unique violation inside a write means another writer got there first
    const raceOnUniqueViolation = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.mapError(effect, (e) => (isUniqueViolation(e) ? new LostRace() : e))

    /** Run `attempt` again on fresh reads while a concurrent writer wins the race. */
    const retryLostRace = <A, E, R>(attempt: Effect.Effect<A, E | LostRace, R>) =>
      Effect.gen(function* () {
        for (let i = 0; i < 5; i++) {
          const r = yield* Effect.either(attempt)
          if (Either.isRight(r)) return r.right
          if (!(r.left instanceof LostRace)) return yield* Effect.fail(r.left as E)
        }
        return yield* Effect.dieMessage("customer link lost the same race repeatedly")
      })

    /** One attempt; `created` remembers a customer an earlier attempt of the same link created. */
    const attempt = (input: LinkInput, created: { id?: string }) =>
      Effect.gen(function* () {
        const dryRun = input.dryRun === true
        let customer = yield* customers.findByExternalId(input.externalId)
        let customerCreated = false

        let knownByStripe: Option.Option<CustomerMappingRow> | undefined
        if (Option.isNone(customer)) {
          const byStripe = yield* mappings.findByProviderCustomerId(input.stripeCustomerId)
          knownByStripe = byStripe
          const step = decideWithoutCustomer(input, byStripe)
          if (step._tag === "Answer") {
            // The Stripe customer mapped to "another" customer may be this external_id's, created
            // and mapped between the two reads: then decide again on fresh reads.
            if (step.outcome.mapping === "conflict" && Option.isSome(yield* customers.findByExternalId(input.externalId))) return yield* new LostRace()
            return step.outcome
          }
          const r = yield* customerService.findOrCreate(
            { externalId: input.externalId, name: input.name ?? null, email: input.email ?? null },
            { create: true }
          )
          customer = r.customer
          customerCreated = r.created
          if (Option.isNone(customer)) return yield* new LostRace()
          if (r.created) created.id = customer.value.id
        } else if (!dryRun) {
          // Existing customer: the pending pass is a no-op when nothing waits, and covers events
          // that arrived between its creation elsewhere and now.
          yield* customerService.findOrCreate({ externalId: input.externalId }, { create: false })
        }

        const customerId = customer.value.id
        // A customer created just now has no mapping yet, and the Stripe side was read above; a
        // concurrent writer shows up as a unique violation on insert (LostRace → retry).
        const byCustomer = customerCreated ? Option.none<CustomerMappingRow>() : yield* mappings.findByCustomerId(customerId)
        const byStripe = customerCreated && knownByStripe !== undefined ? knownByStripe : yield* mappings.findByProviderCustomerId(input.stripeCustomerId)

        // After a lost race, the customer this link created is still reported as created.
        const step = decideMapping(input, customerId, customerCreated || created.id === customerId, byCustomer, byStripe)
        if (step._tag === "Answer") return step.outcome
        const written = yield* writeMapping(step.write, patchOf(input, customerId))
        if (Option.isNone(written)) return yield* new LostRace()
        return { ...step.outcome, mappingId: written.value.id } satisfies LinkOutcome
      }).pipe(raceOnUniqueViolation)

    /** Find-or-create the customer and its Stripe mapping. */
    const link = Effect.fn("CustomerLinker.link")(function* (input: LinkInput) {
      yield* Effect.annotateCurrentSpan({ "link.source": input.source, "link.on_conflict": input.onConflict, "link.dry_run": input.dryRun === true })
      const outcome = yield* retryLostRace(attempt(input, {}))
      if (outcome.mapping === "conflict" && input.onConflict === "fail")
        return yield* Conflict.of("mapping_conflict", `Stripe customer ${input.stripeCustomerId} or external_id ${input.externalId} is already mapped differently`, {
          external_id: input.externalId,
          stripe_customer_id: input.stripeCustomerId,
          conflict_with: outcome.conflictWith
        })
      return outcome
    })

    /**
     * One batch attempt: read every customer and mapping the inputs touch (one statement),
     * decide each input in order against that state as `link` would after the earlier ones,
     * then write: one insert of the new customers (and one pending pass), then the mapping
     * writes in decision order, consecutive inserts as one statement. Runs in its own
     * (sub)transaction, so a lost race undoes the batch's writes before it is decided again.
     */
    const attemptMany = (inputs: ReadonlyArray<LinkManyInput>, stopAtConflict: boolean) =>
      Effect.gen(function* () {
        const stored = yield* mappings.readForLinks([...new Set(inputs.map((i) => i.externalId))], [...new Set(inputs.map((i) => i.stripeCustomerId))])
        const customerIdOf = new Map<string, string>(stored.customerIds)
        const index = new MappingIndex(stored.mappings)

        const outcomes: Array<LinkOutcome> = []
        const newCustomers: Array<NewCustomer & { readonly id: CustomerId }> = []
        const createdIds = new Set<string>()
        const existingToLink = new Map<string, string>() // external_id → customer id, for the pending pass
        const ops: Array<MappingOp> = []
        for (const input of inputs) {
          let customerId = customerIdOf.get(input.externalId)
          let customerCreated = false
          if (customerId === undefined) {
            const step = decideWithoutCustomer(input, index.byStripe(input.stripeCustomerId))
            if (step._tag === "Answer") {
              outcomes.push(step.outcome)
              if (stopAtConflict && step.outcome.mapping === "conflict") break
              continue
            }
            const id = newId.customer()
            newCustomers.push({ id, externalId: input.externalId, name: input.name ?? null, email: input.email ?? null })
            customerIdOf.set(input.externalId, id)
            createdIds.add(id)
            customerId = id
            customerCreated = true
          } else if (input.dryRun !== true && !createdIds.has(customerId)) existingToLink.set(input.externalId, customerId)

          const step = decideMapping(input, customerId, customerCreated, index.byCustomer(customerId), index.byStripe(input.stripeCustomerId))
          if (step._tag === "Answer") {
            outcomes.push(step.outcome)
            if (stopAtConflict && step.outcome.mapping === "conflict") break
            continue
          }
          const patch = patchOf(input, customerId)
          let mappingId: string
          if (step.write._tag === "Insert") {
            mappingId = newId.mapping()
            ops.push({ _tag: "Insert", row: { ...patch, id: mappingId, metadata: {} } })
          } else {
            mappingId = step.write.id
            if (step.write.removeFirst !== null) index.remove(step.write.removeFirst)
            ops.push({ _tag: "Reassign", write: step.write, patch })
          }
          index.put({ id: mappingId, customerId, providerCustomerId: input.stripeCustomerId, status: "active" })
          outcomes.push({ ...step.outcome, mappingId })
        }

        const inserted = yield* customerService.createMany(
          newCustomers,
          [...existingToLink].map(([externalId, customerId]) => ({ externalId, customerId }))
        )
        if (inserted.length < newCustomers.length) return yield* new LostRace()
        for (let i = 0; i < ops.length; ) {
          const op = ops[i]!
          if (op._tag === "Reassign") {
            if (Option.isNone(yield* writeMapping(op.write, op.patch))) return yield* new LostRace()
            i++
            continue
          }
          let end = i
          while (end < ops.length && ops[end]!._tag === "Insert") end++
          const rows = ops.slice(i, end).map((o) => (o as Extract<MappingOp, { _tag: "Insert" }>).row)
          if ((yield* mappings.insertMany(rows)).length < rows.length) return yield* new LostRace()
          i = end
        }
        return outcomes as ReadonlyArray<LinkOutcome>
      }).pipe(raceOnUniqueViolation, sql.withTransaction)

    /** The batch's meaning, one input at a time (each re-reading what the previous ones wrote). */
    const linkOneByOne = (inputs: ReadonlyArray<LinkManyInput>, stopAtConflict: boolean) =>
      Effect.gen(function* () {
        const outcomes: Array<LinkOutcome> = []
        for (const input of inputs) {
          const outcome = yield* retryLostRace(attempt(input, {}))
          outcomes.push(outcome)
          if (stopAtConflict && outcome.mapping === "conflict") break
        }
        return outcomes as ReadonlyArray<LinkOutcome>
      })

    /**
     * `link` for many customers at once, with a constant number of statements: outcome i is
     * exactly what `link(inputs[i])` would answer after `link` of the inputs before it. With
     * `stopAtConflict`, inputs after the first conflict are not linked (and have no outcome).
     * When a concurrent writer wins a race (rare: the batch's writes are undone), the batch is
     * linked one input at a time instead: a wide batch retried whole could keep losing.
     */
    const linkMany = Effect.fn("CustomerLinker.linkMany")(function* (
      inputs: ReadonlyArray<LinkManyInput>,
      options: { readonly stopAtConflict?: boolean } = {}
    ) {
      yield* Effect.annotateCurrentSpan({ "link.count": inputs.length })
      const stopAtConflict = options.stopAtConflict === true
      if (inputs.length === 0) return [] as ReadonlyArray<LinkOutcome>
      return yield* attemptMany(inputs, stopAtConflict).pipe(
        Effect.catchTag("LostRace", () =>
          Effect.annotateCurrentSpan("link.one_by_one", true).pipe(
            Effect.zipRight(Metric.increment(Metrics.customerLinkBatchFallbacksTotal)),
            Effect.zipRight(linkOneByOne(inputs, stopAtConflict))
          )
        )
      )
    })

    /** Mark the Stripe customer's mapping deleted (its usage stops syncing). True when one changed. */
    const unlinkStripeCustomer = Effect.fn("CustomerLinker.unlinkStripeCustomer")((stripeCustomerId: string) =>
      mappings.markDeletedByProviderCustomerId(stripeCustomerId)
    )

    return { link, linkMany, unlinkStripeCustomer } as const
  }),
  dependencies: [CustomerRepo.Default, CustomerService.Default, CustomerMappingRepo.Default]
}) {}

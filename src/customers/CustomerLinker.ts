/**
 * THE one call that finds-or-creates a customer and its Stripe mapping. Webhooks, the Stripe
 * customer migration and the CSV import all use it, so the conflict rules are the same everywhere:
 *
 * - conflict = the external_id's customer is already mapped (active) to ANOTHER Stripe customer,
 *   or this Stripe customer is already mapped (active) to ANOTHER customer;
 * - `skip` records nothing and answers `conflict`; `overwrite` replaces the mapping(s) in the
 *   way; `fail` fails with Conflict `mapping_conflict`.
 *
 * Customers are created through CustomerService, which processes their pending events.
 * A concurrent writer (e.g. customer.created and customer.updated delivered together) makes an
 * insert lose on a unique key; the whole decision is then re-run on fresh reads.
 */
import { Data, Effect, Either, Option } from "effect"
import { Conflict } from "../domain/Errors.js"
import { CustomerMappingRepo, type CustomerMappingRow, type MappingSource } from "../repositories/CustomerMappingRepo.js"
import { CustomerRepo } from "../repositories/CustomerRepo.js"
import { CustomerService } from "./CustomerService.js"

export interface LinkInput {
  readonly externalId: string
  readonly stripeCustomerId: string
  readonly name?: string | null
  readonly email?: string | null
  readonly source: "webhook" | "migration" | "csv" | "api"
  readonly migrationId?: string
  readonly createCustomer: boolean
  readonly onConflict: "skip" | "overwrite" | "fail"
  readonly dryRun?: boolean
}

export interface LinkOutcome {
  /** null when the customer does not exist (and was not / would not be created, or dry run). */
  readonly customerId: string | null
  /** True when the customer was created (in a dry run: would be created). */
  readonly customerCreated: boolean
  readonly mapping: "created" | "updated" | "unchanged" | "conflict" | "customer_missing"
  readonly conflictWith?: { readonly customerId?: string; readonly stripeCustomerId?: string }
  /** The mapping row written or found (absent for conflict, customer_missing and dry runs that would create). */
  readonly mappingId?: string
}

/** What `link` can fail with: database / event store errors, and Conflict `mapping_conflict` with onConflict "fail". */
export type LinkError = Conflict | import("@effect/sql").SqlError.SqlError | import("../events/EventStore.js").EventStoreError

/** A concurrent writer kept winning the unique keys; the caller may retry. */
class LostRace extends Data.TaggedError("LostRace")<{}> {}

const isUniqueViolation = (e: unknown): boolean =>
  (e as { _tag?: string })._tag === "SqlError" && (e as { cause?: { code?: string } }).cause?.code === "23505"

export class CustomerLinker extends Effect.Service<CustomerLinker>()("flexprice/CustomerLinker", {
  effect: Effect.gen(function* () {
    const customers = yield* CustomerRepo
    const customerService = yield* CustomerService
    const mappings = yield* CustomerMappingRepo

    const conflictOf = (
      byCustomer: Option.Option<CustomerMappingRow>,
      byStripe: Option.Option<CustomerMappingRow>,
      customerId: string | null,
      stripeCustomerId: string
    ): LinkOutcome["conflictWith"] | undefined => {
      const c: { customerId?: string; stripeCustomerId?: string } = {}
      if (Option.isSome(byCustomer) && byCustomer.value.status === "active" && byCustomer.value.providerCustomerId !== stripeCustomerId)
        c.stripeCustomerId = byCustomer.value.providerCustomerId
      if (Option.isSome(byStripe) && byStripe.value.status === "active" && byStripe.value.customerId !== customerId)
        c.customerId = byStripe.value.customerId
      return c.customerId === undefined && c.stripeCustomerId === undefined ? undefined : c
    }

    const attempt = (input: LinkInput) =>
      Effect.gen(function* () {
        const dryRun = input.dryRun === true
        let customer = yield* customers.findByExternalId(input.externalId)
        let customerCreated = false

        let knownByStripe: Option.Option<CustomerMappingRow> | undefined
        if (Option.isNone(customer)) {
          const byStripe = yield* mappings.findByProviderCustomerId(input.stripeCustomerId)
          knownByStripe = byStripe
          const conflictWith = conflictOf(Option.none(), byStripe, null, input.stripeCustomerId)
          if (!input.createCustomer) return { customerId: null, customerCreated: false, mapping: "customer_missing" } satisfies LinkOutcome
          if (dryRun) {
            if (conflictWith !== undefined && input.onConflict !== "overwrite")
              return yield* decideConflict(input, { customerId: null, customerCreated: true, conflictWith })
            return { customerId: null, customerCreated: true, mapping: "created" } satisfies LinkOutcome
          }
          // Without `overwrite`, a Stripe customer mapped elsewhere must not even create the customer.
          if (conflictWith !== undefined && input.onConflict !== "overwrite")
            return yield* decideConflict(input, { customerId: null, customerCreated: false, conflictWith })
          const r = yield* customerService.findOrCreate(
            { externalId: input.externalId, name: input.name ?? null, email: input.email ?? null },
            { create: true }
          )
          customer = r.customer
          customerCreated = r.created
          if (Option.isNone(customer)) return yield* new LostRace()
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

        if (
          Option.isSome(byCustomer) &&
          byCustomer.value.status === "active" &&
          byCustomer.value.providerCustomerId === input.stripeCustomerId
        ) {
          return { customerId, customerCreated, mapping: "unchanged", mappingId: byCustomer.value.id } satisfies LinkOutcome
        }

        const conflictWith = conflictOf(byCustomer, byStripe, customerId, input.stripeCustomerId)
        if (conflictWith !== undefined && input.onConflict !== "overwrite")
          return yield* decideConflict(input, { customerId, customerCreated, conflictWith })

        const existed = Option.isSome(byCustomer) || Option.isSome(byStripe)
        if (dryRun) return { customerId, customerCreated, mapping: existed ? "updated" : "created" } satisfies LinkOutcome

        const patch = {
          customerId,
          providerCustomerId: input.stripeCustomerId,
          source: input.source as MappingSource,
          migrationId: input.migrationId ?? null
        }
        let written: Option.Option<CustomerMappingRow>
        if (Option.isSome(byCustomer)) {
          if (Option.isSome(byStripe) && byStripe.value.id !== byCustomer.value.id) yield* mappings.removeById(byStripe.value.id)
          written = yield* mappings.reassign(byCustomer.value.id, patch)
        } else if (Option.isSome(byStripe)) {
          written = yield* mappings.reassign(byStripe.value.id, patch)
        } else {
          written = yield* mappings.insert({ ...patch, metadata: {} })
        }
        if (Option.isNone(written)) return yield* new LostRace()
        return {
          customerId,
          customerCreated,
          mapping: existed ? "updated" : "created",
          mappingId: written.value.id,
          ...(conflictWith !== undefined ? { conflictWith } : {})
        } satisfies LinkOutcome
      }).pipe(
        // a unique violation inside reassign/remove means another writer got there first
        Effect.mapError((e) => (isUniqueViolation(e) ? new LostRace() : e))
      )

    const decideConflict = (
      input: LinkInput,
      o: { customerId: string | null; customerCreated: boolean; conflictWith: NonNullable<LinkOutcome["conflictWith"]> }
    ) =>
      input.onConflict === "fail"
        ? Effect.fail(
            Conflict.of("mapping_conflict", `Stripe customer ${input.stripeCustomerId} or external_id ${input.externalId} is already mapped differently`, {
              external_id: input.externalId,
              stripe_customer_id: input.stripeCustomerId,
              conflict_with: o.conflictWith
            })
          )
        : Effect.succeed({ customerId: o.customerId, customerCreated: o.customerCreated, mapping: "conflict", conflictWith: o.conflictWith } satisfies LinkOutcome as LinkOutcome)

    /** Find-or-create the customer and its Stripe mapping. */
    const link = (input: LinkInput) =>
      Effect.gen(function* () {
        for (let i = 0; i < 5; i++) {
          const r = yield* Effect.either(attempt(input))
          if (Either.isRight(r)) return r.right
          if (r.left._tag !== "LostRace") return yield* Effect.fail(r.left)
        }
        return yield* Effect.dieMessage("customer link lost the same race repeatedly")
      }).pipe(
        Effect.withSpan("customers.link", {
          attributes: { "link.source": input.source, "link.on_conflict": input.onConflict, "link.dry_run": input.dryRun === true }
        })
      )

    /** Mark the Stripe customer's mapping deleted (its usage stops syncing). True when one changed. */
    const unlinkStripeCustomer = (stripeCustomerId: string) =>
      mappings.markDeletedByProviderCustomerId(stripeCustomerId).pipe(Effect.withSpan("customers.unlink_stripe_customer"))

    return { link, unlinkStripeCustomer } as const
  }),
  dependencies: [CustomerRepo.Default, CustomerService.Default, CustomerMappingRepo.Default]
}) {}


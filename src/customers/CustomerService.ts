/**
 * The one way customers come into existence — the API, Stripe webhooks and the Stripe customer
 * migration all call `findOrCreate`/`create`/`createMany` — so that events which arrived before
 * the customer are always processed once it exists.
 */
import { Effect, Option } from "effect"
import { Conflict } from "../domain/Errors.js"
import type { CustomerId } from "../domain/Ids.js"
import { EventIngestor } from "../events/EventIngestor.js"
import { CustomerRepo, type CustomerRow, type NewCustomer } from "../repositories/CustomerRepo.js"

export class CustomerService extends Effect.Service<CustomerService>()("flexprice/CustomerService", {
  effect: Effect.gen(function* () {
    const repo = yield* CustomerRepo
    const ingestor = yield* EventIngestor

    /** Create; a taken external_id → Conflict `customer_exists`. */
    const create = Effect.fn("CustomerService.create")(function* (input: NewCustomer) {
      const inserted = yield* repo.insert(input)
      if (Option.isNone(inserted))
        return yield* Conflict.of("customer_exists", `a customer with external_id ${input.externalId} already exists`, {
          external_id: input.externalId
        })
      yield* ingestor.processPendingFor(inserted.value.externalId, inserted.value.id)
      return inserted.value
    })

    /**
     * Find by external_id, or create it when allowed. Always runs the pending pass, which is a
     * no-op when nothing is pending, so a customer created concurrently elsewhere is covered.
     */
    const findOrCreate = Effect.fn("CustomerService.findOrCreate")(function* (
      input: NewCustomer,
      options: { readonly create: boolean } = { create: true }
    ) {
      // With `create`, insert first (ON CONFLICT DO NOTHING): callers reach here after not
      // finding the customer, so one statement usually settles it.
      let created = false
      let found: Option.Option<CustomerRow> = Option.none()
      if (options.create) {
        found = yield* repo.insert(input)
        created = Option.isSome(found)
      }
      if (Option.isNone(found)) found = yield* repo.findByExternalId(input.externalId)
      if (Option.isSome(found)) yield* ingestor.processPendingFor(found.value.externalId, found.value.id)
      return { customer: found, created } as { readonly customer: Option.Option<CustomerRow>; readonly created: boolean }
    })

    /**
     * Insert several customers (ids chosen by the caller, so a batch can refer to them first)
     * and run ONE pending pass for them and for `existing` customers the caller is about to
     * link. Returns the ids inserted; an external_id already taken is left out, and the caller
     * decides (a batch of links re-reads and decides again).
     */
    const createMany = Effect.fn("CustomerService.createMany")(function* (
      rows: ReadonlyArray<NewCustomer & { readonly id: CustomerId }>,
      existing: ReadonlyArray<{ readonly externalId: string; readonly customerId: string }> = []
    ) {
      const inserted = yield* repo.insertMany(rows)
      const insertedIds = new Set<string>(inserted)
      yield* ingestor.processPendingForMany([
        ...rows.filter((r) => insertedIds.has(r.id)).map((r) => ({ externalId: r.externalId, customerId: r.id })),
        ...existing
      ])
      return inserted
    })

    return { create, createMany, findOrCreate } as const
  }),
  dependencies: [CustomerRepo.Default, EventIngestor.Default]
}) {}

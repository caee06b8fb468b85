/**
 * LinkRules: a dry run answers what the real link would answer (mapping outcome, conflict,
 * whether a customer is created), for every stored state around one input.
 */
import { Option } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decideMapping, decideWithoutCustomer, type LinkInput, type LinkOutcome, type StoredMapping } from "../../src/customers/LinkRules.js"

const stored = (customerId: fc.Arbitrary<string>, stripeId: fc.Arbitrary<string>) =>
  fc.option(
    fc.record({ id: fc.constantFrom("map_a", "map_b"), customerId, providerCustomerId: stripeId, status: fc.constantFrom("active" as const, "deleted" as const) }),
    { nil: undefined }
  )

/** The real link: decide, and when the customer is created, decide its mapping as `link` does. */
const realOutcome = (input: LinkInput, customerId: string | null, byCustomer: Option.Option<StoredMapping>, byStripe: Option.Option<StoredMapping>): LinkOutcome => {
  let id = customerId
  let created = false
  if (id === null) {
    const step = decideWithoutCustomer(input, byStripe)
    if (step._tag === "Answer") return step.outcome
    id = "cust_new"
    created = true
  }
  const step = decideMapping(input, id, created, created ? Option.none() : byCustomer, byStripe)
  return step._tag === "Answer" ? step.outcome : { ...step.outcome, mappingId: "written" }
}

// A dry-run conflict for a customer that does not exist says customerCreated (its creation is
// what the conflict stands in the way of); callers count creations only outside dry runs.
const comparable = (o: LinkOutcome) =>
  o.mapping === "conflict" ? { mapping: o.mapping, conflictWith: o.conflictWith } : { mapping: o.mapping, customerCreated: o.customerCreated, conflictWith: o.conflictWith }

describe("LinkRules", () => {
  it("a dry run answers the real link's mapping outcome, conflict and customer creation", () => {
    fc.assert(
      fc.property(
        fc.option(fc.constantFrom("cust_1", "cust_2"), { nil: null }),
        stored(fc.constantFrom("cust_1", "cust_2"), fc.constantFrom("cus_X", "cus_Y")),
        stored(fc.constantFrom("cust_1", "cust_2", "cust_3"), fc.constant("cus_X")),
        fc.constantFrom("skip" as const, "overwrite" as const),
        fc.boolean(),
        (customerId, rawByCustomer, rawByStripe, onConflict, createCustomer) => {
          // what is stored must be consistent: the customer's row belongs to it; none without a customer
          const byCustomer = customerId === null || rawByCustomer === undefined ? Option.none<StoredMapping>() : Option.some({ ...rawByCustomer, customerId })
          const byStripe = Option.fromNullable(rawByStripe).pipe(
            Option.map((m): StoredMapping => (Option.isSome(byCustomer) && m.customerId === customerId ? byCustomer.value : { ...m, id: "map_s" }))
          )
          if (Option.isSome(byCustomer) && byCustomer.value.providerCustomerId === "cus_X" && Option.isSome(byStripe) && byStripe.value.id !== byCustomer.value.id) return
          const input: LinkInput = { externalId: "ext", stripeCustomerId: "cus_X", source: "csv", createCustomer, onConflict }
          const real = realOutcome(input, customerId, byCustomer, byStripe)
          const dry = realOutcome({ ...input, dryRun: true }, customerId, byCustomer, byStripe)
          expect(comparable(dry)).toEqual(comparable(real))
        }
      ),
      { numRuns: 500 }
    )
  })
})

/**
 * The rules of linking a customer (by external_id) to a Stripe customer, as pure decisions over
 * what is stored. `CustomerLinker.link` (one customer, reading the database) and
 * `CustomerLinker.linkMany` (a page, reading once and tracking its own writes in memory) both
 * decide through these two functions, so the outcomes cannot drift apart.
 *
 * - conflict = the external_id's customer is already mapped (active) to ANOTHER Stripe customer,
 *   or this Stripe customer is already mapped (active) to ANOTHER customer;
 * - `skip` (and `fail`, which the caller turns into an error) answers `conflict` and writes
 *   nothing; `overwrite` replaces the mapping(s) in the way.
 */
import { Option } from "effect"
import type { CustomerMappingRow } from "../repositories/CustomerMappingRepo.js"

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

/** What the decisions look at of a stored mapping row. */
export type StoredMapping = Pick<CustomerMappingRow, "id" | "customerId" | "providerCustomerId" | "status">

const conflictOf = (
  byCustomer: Option.Option<StoredMapping>,
  byStripe: Option.Option<StoredMapping>,
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

export type CustomerStep = { readonly _tag: "Answer"; readonly outcome: LinkOutcome } | { readonly _tag: "CreateCustomer" }

/**
 * No customer has the external_id: answer now, or create it (then decide the mapping with
 * `decideMapping`, the new customer having no mapping and `byStripe` as read here).
 */
export const decideWithoutCustomer = (input: LinkInput, byStripe: Option.Option<StoredMapping>): CustomerStep => {
  const conflictWith = conflictOf(Option.none(), byStripe, null, input.stripeCustomerId)
  if (!input.createCustomer) return { _tag: "Answer", outcome: { customerId: null, customerCreated: false, mapping: "customer_missing" } }
  const dryRun = input.dryRun === true
  // Without `overwrite`, a Stripe customer mapped elsewhere must not even create the customer.
  if (conflictWith !== undefined && input.onConflict !== "overwrite")
    return { _tag: "Answer", outcome: { customerId: null, customerCreated: dryRun, mapping: "conflict", conflictWith } }
  // What `decideMapping` answers for the new customer (no mapping of its own, `byStripe` as read),
  // written nowhere: an `overwrite` of a Stripe customer mapped elsewhere is an update with its conflict.
  if (dryRun)
    return {
      _tag: "Answer",
      outcome: {
        customerId: null,
        customerCreated: true,
        mapping: Option.isSome(byStripe) ? "updated" : "created",
        ...(conflictWith !== undefined ? { conflictWith } : {})
      }
    }
  return { _tag: "CreateCustomer" }
}

/** The mapping write to make: a new row, or an existing row pointed at this pair (after removing `removeFirst`). */
export type MappingWrite = { readonly _tag: "Insert" } | { readonly _tag: "Reassign"; readonly id: string; readonly removeFirst: string | null }

export type MappingStep =
  | { readonly _tag: "Answer"; readonly outcome: LinkOutcome }
  /** Write, then answer `outcome` with the written row's id as `mappingId`. */
  | { readonly _tag: "Write"; readonly write: MappingWrite; readonly outcome: Omit<LinkOutcome, "mappingId"> }

/** The customer exists (or was just created): answer, or say which mapping write links it. */
export const decideMapping = (
  input: LinkInput,
  customerId: string,
  customerCreated: boolean,
  byCustomer: Option.Option<StoredMapping>,
  byStripe: Option.Option<StoredMapping>
): MappingStep => {
  if (Option.isSome(byCustomer) && byCustomer.value.status === "active" && byCustomer.value.providerCustomerId === input.stripeCustomerId)
    return { _tag: "Answer", outcome: { customerId, customerCreated, mapping: "unchanged", mappingId: byCustomer.value.id } }
  // The same pair seen from the Stripe side: `link` reads the two sides in separate statements, so
  // a concurrent writer can commit the pair between them (byCustomer None, byStripe this pair).
  if (Option.isSome(byStripe) && byStripe.value.status === "active" && byStripe.value.customerId === customerId)
    return { _tag: "Answer", outcome: { customerId, customerCreated, mapping: "unchanged", mappingId: byStripe.value.id } }

  const conflictWith = conflictOf(byCustomer, byStripe, customerId, input.stripeCustomerId)
  if (conflictWith !== undefined && input.onConflict !== "overwrite")
    return { _tag: "Answer", outcome: { customerId, customerCreated, mapping: "conflict", conflictWith } }

  const mapping = Option.isSome(byCustomer) || Option.isSome(byStripe) ? "updated" : "created"
  // A dry run reports the conflict an `overwrite` would replace, as the real run does.
  if (input.dryRun === true)
    return { _tag: "Answer", outcome: { customerId, customerCreated, mapping, ...(conflictWith !== undefined ? { conflictWith } : {}) } }

  const write: MappingWrite = Option.isSome(byCustomer)
    ? {
        _tag: "Reassign",
        id: byCustomer.value.id,
        removeFirst: Option.isSome(byStripe) && byStripe.value.id !== byCustomer.value.id ? byStripe.value.id : null
      }
    : Option.isSome(byStripe)
      ? { _tag: "Reassign", id: byStripe.value.id, removeFirst: null }
      : { _tag: "Insert" }
  return { _tag: "Write", write, outcome: { customerId, customerCreated, mapping, ...(conflictWith !== undefined ? { conflictWith } : {}) } }
}

/** Customers of the emulated account (https://docs.stripe.com/api/customers). */
import { invalidParam, noSuch } from "../errors.js"
import type { FormObject, FormValue } from "../form.js"
import {
  type Customer,
  type CustomerEntry,
  type CustomerParams,
  type DeletedCustomer,
  type ListParams,
  type Metadata,
  type Page,
  paginate,
  stripeId
} from "./model.js"
import { randomToken } from "../../domain/Ids.js"

const METADATA_MAX_KEYS = 50

const readMetadata = (
  value: FormValue | undefined,
  current: Metadata | undefined
): Record<string, string> => {
  const next: Record<string, string> = { ...current }
  if (value === undefined) return next
  // `metadata=` (empty string) clears every key, as in Stripe.
  if (typeof value === "string") {
    if (value === "") return {}
    throw invalidParam("metadata", "Invalid object")
  }
  if (Array.isArray(value)) throw invalidParam("metadata", "Invalid object")
  for (const [k, v] of Object.entries(value as FormObject)) {
    if (typeof v !== "string") throw invalidParam(`metadata[${k}]`, "Invalid string: metadata values must be strings")
    if (k.length > 40) throw invalidParam(`metadata[${k}]`, "Metadata keys can have up to 40 characters.")
    if (v.length > 500) throw invalidParam(`metadata[${k}]`, "Metadata values can have up to 500 characters.")
    if (v === "") delete next[k]
    else next[k] = v
  }
  if (Object.keys(next).length > METADATA_MAX_KEYS) {
    throw invalidParam("metadata", "Metadata can have up to 50 keys.")
  }
  return next
}

const optionalString = (v: FormValue | undefined, param: string): string | null | undefined => {
  if (v === undefined) return undefined
  if (typeof v !== "string") throw invalidParam(param, `Invalid string: ${param}`)
  return v === "" ? null : v
}

export class Customers {
  private readonly customers = new Map<string, CustomerEntry>()
  private readonly order: Array<string> = []

  constructor(private readonly livemode: boolean) {}

  create(params: FormObject | CustomerParams, nowMs: number): Customer {
    const p = params as FormObject
    const created = Math.floor(nowMs / 1000)
    const customer: Customer = {
      id: stripeId("cus", 14),
      object: "customer",
      address: null,
      balance: 0,
      created,
      currency: null,
      default_source: null,
      delinquent: false,
      description: optionalString(p.description, "description") ?? null,
      discount: null,
      email: optionalString(p.email, "email") ?? null,
      invoice_prefix: randomToken(8).toUpperCase(),
      invoice_settings: { custom_fields: null, default_payment_method: null, footer: null, rendering_options: null },
      livemode: this.livemode,
      metadata: readMetadata(p.metadata, undefined),
      name: optionalString(p.name, "name") ?? null,
      next_invoice_sequence: 1,
      phone: optionalString(p.phone, "phone") ?? null,
      preferred_locales: [],
      shipping: null,
      tax_exempt: "none",
      test_clock: null
    }
    this.customers.set(customer.id, { customer, deleted: false, index: this.order.length })
    this.order.push(customer.id)
    return customer
  }

  /** A live customer, or a deleted stub (Stripe answers retrieve on a deleted customer with it). */
  retrieve(id: string): Customer | DeletedCustomer {
    const entry = this.customers.get(id)
    if (!entry) throw noSuch("customer", id)
    return entry.deleted ? { id, object: "customer", deleted: true } : entry.customer
  }

  live(id: string): Customer | undefined {
    const entry = this.customers.get(id)
    return entry && !entry.deleted ? entry.customer : undefined
  }

  /** Returns the updated customer and the fields whose values changed (Stripe's previous_attributes). */
  update(
    id: string,
    params: FormObject | CustomerParams
  ): { readonly customer: Customer; readonly previous: Record<string, unknown> } {
    const entry = this.customers.get(id)
    if (!entry || entry.deleted) throw noSuch("customer", id)
    const p = params as FormObject
    const before = entry.customer
    const patch: Record<string, unknown> = {}
    for (const field of ["name", "email", "description", "phone"] as const) {
      const v = optionalString(p[field], field)
      if (v !== undefined) patch[field] = v
    }
    if (p.metadata !== undefined) patch.metadata = readMetadata(p.metadata, before.metadata)
    const after = { ...before, ...patch } as Customer
    const previous: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(patch)) {
      const old = (before as unknown as Record<string, unknown>)[k]
      if (k === "metadata") {
        const oldMeta = old as Metadata
        const newMeta = v as Metadata
        const diff: Record<string, string | null> = {}
        for (const key of new Set([...Object.keys(oldMeta), ...Object.keys(newMeta)])) {
          if (oldMeta[key] !== newMeta[key]) diff[key] = oldMeta[key] ?? null
        }
        if (Object.keys(diff).length > 0) previous.metadata = diff
      } else if (old !== v) {
        previous[k] = old
      }
    }
    entry.customer = after
    return { customer: after, previous }
  }

  delete(id: string): { readonly deleted: DeletedCustomer; readonly customer: Customer } {
    const entry = this.customers.get(id)
    if (!entry || entry.deleted) throw noSuch("customer", id)
    entry.deleted = true
    return { deleted: { id, object: "customer", deleted: true }, customer: entry.customer }
  }

  list(params: ListParams & { readonly email?: string | undefined }): Page<Customer> {
    const email = params.email
    return paginate(
      this.order,
      (id) => this.customers.get(id)?.index,
      (id) => {
        const e = this.customers.get(id)
        if (!e || e.deleted) return undefined
        if (email !== undefined && e.customer.email !== email) return undefined
        return e.customer
      },
      params,
      "customer"
    )
  }

  all(): ReadonlyArray<Customer> {
    const out: Array<Customer> = []
    for (const id of this.order) {
      const e = this.customers.get(id)!
      if (!e.deleted) out.push(e.customer)
    }
    return out
  }
}

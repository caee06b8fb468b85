/**
 * CustomerLinker.linkMany (the migration's batch path) against CustomerLinker.link (the webhook
 * path), on PGlite and PostgreSQL: for any stored state and any page — new customers, already
 * mapped, conflicts either way, deleted mappings, the same external_id or Stripe customer twice
 * in one page, customers that may not be created, dry runs, overwrite, stop at the first
 * conflict — the batch answers, per customer, what linking one by one in page order answers,
 * and leaves the same customers and mappings. Also: events waiting for a customer the batch
 * creates are processed, and a batch racing concurrent single links stays consistent.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect, Metric, Option, Runtime } from "effect"
import * as fc from "fast-check"
import { expect } from "vitest"
import { CustomerLinker, type LinkManyInput, type LinkOutcome } from "../../src/customers/CustomerLinker.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import * as Metrics from "../../src/observability/Metrics.js"
import { CustomerRepo } from "../../src/repositories/CustomerRepo.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { newTenant } from "../support/TestApp.js"

// Few ids, so that pages often meet stored rows and each other.
const EXTERNAL_IDS = ["e0", "e1", "e2", "e3", "e4"]
const STRIPE_IDS = ["cus_s0", "cus_s1", "cus_s2", "cus_s3", "cus_s4", "cus_s5"]

/** Stored state before the page: customers (by external id) and their mapping, if any. */
interface Stored {
  readonly customers: ReadonlyArray<{ readonly externalId: string; readonly mapping: { readonly stripe: string; readonly deleted: boolean } | null }>
}

const storedArb: fc.Arbitrary<Stored> = fc
  .uniqueArray(
    fc.record({
      externalId: fc.constantFrom(...EXTERNAL_IDS.slice(0, 4)),
      mapping: fc.option(fc.record({ stripe: fc.constantFrom(...STRIPE_IDS.slice(0, 5)), deleted: fc.boolean() }), { nil: null, freq: 4 })
    }),
    { selector: (c) => c.externalId, maxLength: 4 }
  )
  .map((customers) => {
    // one mapping per Stripe customer, as the unique key allows
    const used = new Set<string>()
    return {
      customers: customers.map((c) => {
        if (c.mapping === null || used.has(c.mapping.stripe)) return { ...c, mapping: null }
        used.add(c.mapping.stripe)
        return c
      })
    }
  })

const pageArb = fc.array(fc.record({ externalId: fc.constantFrom(...EXTERNAL_IDS), stripe: fc.constantFrom(...STRIPE_IDS) }), { minLength: 1, maxLength: 10 })

const optionsArb = fc.record({
  onConflict: fc.constantFrom("skip" as const, "overwrite" as const),
  createCustomer: fc.boolean(),
  dryRun: fc.boolean(),
  stopAtConflict: fc.boolean()
})

/** Ids of what was seeded, to name rows the same way in two tenants. */
interface Seeded {
  readonly customerIds: Map<string, string> // customer id → external id
  readonly mappingIds: Map<string, string> // mapping id → external id of its seeded customer
}

const seed = (stored: Stored) =>
  Effect.gen(function* () {
    const customers = yield* CustomerRepo
    const mappings = yield* CustomerMappingRepo
    const customerIds = new Map<string, string>()
    const mappingIds = new Map<string, string>()
    for (const c of stored.customers) {
      const row = Option.getOrThrow(yield* customers.insert({ externalId: c.externalId }))
      customerIds.set(row.id, c.externalId)
      if (c.mapping === null) continue
      const m = Option.getOrThrow(yield* mappings.insert({ customerId: row.id, providerCustomerId: c.mapping.stripe, source: "api" }))
      mappingIds.set(m.id, c.externalId)
      if (c.mapping.deleted) yield* mappings.markDeletedByProviderCustomerId(c.mapping.stripe)
    }
    return { customerIds, mappingIds } satisfies Seeded
  })

/** Customers and mappings of a tenant, with seeded rows named by their seeded external id. */
const stateOf = (seeded: Seeded) =>
  Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const t = yield* CurrentTenant
    const customers = yield* sql<{ id: string; externalId: string }>`SELECT id, external_id FROM customers
      WHERE tenant_id = ${t.tenantId} AND environment_id = ${t.environmentId} ORDER BY external_id`
    const mappings = yield* sql<{ id: string; externalId: string; providerCustomerId: string; status: string; source: string; migrationId: string | null }>`
      SELECT m.id, c.external_id, m.provider_customer_id, m.status, m.source, m.migration_id FROM customer_integration_mappings m
      JOIN customers c ON c.id = m.customer_id
      WHERE m.tenant_id = ${t.tenantId} AND m.environment_id = ${t.environmentId}
      ORDER BY c.external_id`
    return {
      customers: customers.map((c) => `${c.externalId}${seeded.customerIds.has(c.id) ? " (seeded)" : ""}`),
      mappings: mappings.map(
        (m) => `${m.externalId}→${m.providerCustomerId}:${m.status}:${m.source}:${m.migrationId ?? "-"} row ${seeded.mappingIds.get(m.id) ?? "new"}`
      ),
      externalIdOf: new Map(customers.map((c) => [c.id, c.externalId]))
    }
  })

/**
 * Outcomes with ids replaced by names that do not depend on the tenant: customers by external
 * id, mappings by the seeded row they are or by the order in which new rows first appear.
 */
const normalize = (outcomes: ReadonlyArray<LinkOutcome>, seeded: Seeded, externalIdOf: ReadonlyMap<string, string>) => {
  const newMappings = new Map<string, string>()
  const mappingName = (id: string) => {
    const s = seeded.mappingIds.get(id)
    if (s !== undefined) return `seeded row of ${s}`
    if (!newMappings.has(id)) newMappings.set(id, `new row #${newMappings.size}`)
    return newMappings.get(id)!
  }
  const customerName = (id: string) => `${externalIdOf.get(id) ?? "?"}${seeded.customerIds.has(id) ? " (seeded)" : ""}`
  return outcomes.map((o) => ({
    ...o,
    customerId: o.customerId === null ? null : customerName(o.customerId),
    ...(o.mappingId !== undefined ? { mappingId: mappingName(o.mappingId) } : {}),
    ...(o.conflictWith !== undefined
      ? {
          conflictWith: {
            ...o.conflictWith,
            ...(o.conflictWith.customerId !== undefined ? { customerId: customerName(o.conflictWith.customerId) } : {})
          }
        }
      : {})
  }))
}

/** Batches that fell back to linking one by one (only a lost race may cause that). */
const fallbacks = Effect.map(Metric.value(Metrics.customerLinkBatchFallbacksTotal), (state) => state.count)

const asTenant = <A, E, R>(scope: TenantScope, effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, CurrentTenant, scope)

const linkInputs = (page: ReadonlyArray<{ externalId: string; stripe: string }>, o: { readonly onConflict: "skip" | "overwrite"; readonly createCustomer: boolean; readonly dryRun: boolean }) =>
  page.map(
    (p, i): LinkManyInput => ({
      externalId: p.externalId,
      stripeCustomerId: p.stripe,
      name: `Customer ${i}`,
      email: null,
      source: "migration",
      migrationId: "mig_linkmany",
      createCustomer: o.createCustomer,
      onConflict: o.onConflict,
      dryRun: o.dryRun
    })
  )

/**
 * One case of the property: the page linked one by one in tenant "one" and as a batch in tenant
 * "many", both seeded with `stored`; whether the sequential outcomes mixed several kinds.
 */
const linkedBothWays = (stored: Stored, page: ReadonlyArray<{ externalId: string; stripe: string }>, options: typeof optionsArb extends fc.Arbitrary<infer O> ? O : never) =>
  Effect.gen(function* () {
    const inputs = linkInputs(page, options)
    const one = yield* newTenant("one")
    const many = yield* newTenant("many")
    const seededOne = yield* asTenant(one.scope, seed(stored))
    const seededMany = yield* asTenant(many.scope, seed(stored))

    const sequential = yield* asTenant(
      one.scope,
      Effect.gen(function* () {
        const linker = yield* CustomerLinker
        const outcomes: Array<LinkOutcome> = []
        for (const input of inputs) {
          const o = yield* linker.link(input)
          outcomes.push(o)
          if (options.stopAtConflict && o.mapping === "conflict") break
        }
        return outcomes
      })
    )
    const fallbacksBefore = yield* fallbacks
    const batched = yield* asTenant(
      many.scope,
      Effect.flatMap(CustomerLinker, (l) => l.linkMany(inputs, { stopAtConflict: options.stopAtConflict }))
    )
    // nothing raced it: the batch itself answered, without falling back to one by one
    expect(yield* fallbacks).toBe(fallbacksBefore)

    const stateOne = yield* asTenant(one.scope, stateOf(seededOne))
    const stateMany = yield* asTenant(many.scope, stateOf(seededMany))
    expect(normalize(batched, seededMany, stateMany.externalIdOf)).toEqual(normalize(sequential, seededOne, stateOne.externalIdOf))
    expect(stateMany.customers).toEqual(stateOne.customers)
    expect(stateMany.mappings).toEqual(stateOne.mappings)
    return new Set(sequential.map((o) => o.mapping)).size > 2
  })

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(TestApp.layer({ backend }), { excludeTestServices: true })(`CustomerLinker.linkMany on ${backend}`, (it) => {
    it.effect("answers per customer what linking one by one answers, and leaves the same state", () =>
      Effect.gen(function* () {
        // fast-check drives promises: each case runs on the layer's services through this runtime
        const run = Runtime.runPromise(yield* Effect.runtime<Effect.Effect.Context<ReturnType<typeof linkedBothWays>>>())
        let shapes = 0
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(storedArb, pageArb, optionsArb, async (stored, page, options) => {
              if (await run(linkedBothWays(stored, page, options))) shapes++
            }),
            { numRuns: backend === "pglite" ? 80 : 50 }
          )
        )
        // the generator did reach pages that mix several outcomes
        expect(shapes).toBeGreaterThan(0)
      })
    )

    it.effect("gives each customer of a mixed page its outcome: new, already mapped, conflicts both ways, same-page duplicates", () =>
      Effect.gen(function* () {
        const t = yield* newTenant("mixed")
        const seeded = yield* asTenant(
          t.scope,
          seed({
            customers: [
              { externalId: "am", mapping: { stripe: "cus_am", deleted: false } }, // already mapped exactly so
              { externalId: "pc", mapping: { stripe: "cus_elsewhere", deleted: false } }, // mapped to another Stripe customer
              { externalId: "ex", mapping: null }, // exists, unmapped
              { externalId: "owner", mapping: { stripe: "cus_taken", deleted: false } } // its Stripe customer appears under another external_id
            ]
          })
        )
        const page = [
          { externalId: "new-1", stripe: "cus_n1" },
          { externalId: "am", stripe: "cus_am" },
          { externalId: "pc", stripe: "cus_pc" },
          { externalId: "ex", stripe: "cus_ex" },
          { externalId: "thief", stripe: "cus_taken" },
          { externalId: "dup", stripe: "cus_d1" }, // newest first: this one maps
          { externalId: "dup", stripe: "cus_d2" } // same external_id in the same page: conflict
        ]
        const outcomes = yield* asTenant(
          t.scope,
          Effect.flatMap(CustomerLinker, (l) => l.linkMany(linkInputs(page, { onConflict: "skip", createCustomer: true, dryRun: false })))
        )
        const state = yield* asTenant(t.scope, stateOf(seeded))
        expect(normalize(outcomes, seeded, state.externalIdOf).map(({ mappingId: _, ...o }) => o)).toEqual([
          { customerId: "new-1", customerCreated: true, mapping: "created" },
          { customerId: "am (seeded)", customerCreated: false, mapping: "unchanged" },
          { customerId: "pc (seeded)", customerCreated: false, mapping: "conflict", conflictWith: { stripeCustomerId: "cus_elsewhere" } },
          { customerId: "ex (seeded)", customerCreated: false, mapping: "created" },
          { customerId: null, customerCreated: false, mapping: "conflict", conflictWith: { customerId: "owner (seeded)" } },
          { customerId: "dup", customerCreated: true, mapping: "created" },
          { customerId: "dup", customerCreated: false, mapping: "conflict", conflictWith: { stripeCustomerId: "cus_d1" } }
        ])
        expect(state.customers).toEqual(["am (seeded)", "dup", "ex (seeded)", "new-1", "owner (seeded)", "pc (seeded)"])
        expect(state.mappings).toEqual([
          "am→cus_am:active:api:- row am",
          "dup→cus_d1:active:migration:mig_linkmany row new",
          "ex→cus_ex:active:migration:mig_linkmany row new",
          "new-1→cus_n1:active:migration:mig_linkmany row new",
          "owner→cus_taken:active:api:- row owner",
          "pc→cus_elsewhere:active:api:- row pc"
        ])
      })
    )

    it.effect("processes the events that waited for the customers it creates, and of existing customers it links", () =>
      Effect.gen(function* () {
        const t = yield* newTenant("pending")
        const [, meter] = yield* t.client.meters.create({ payload: { name: "calls", event_name: "api_call", aggregation: { type: "COUNT" } }, withResponse: true })
        expect(meter.status).toBe(201)
        yield* asTenant(t.scope, seed({ customers: [] }))
        const events = ["p-new-1", "p-new-2", "p-other"].flatMap((ext) =>
          [1, 2].map((n) => ({ event_id: `${ext}-${n}`, event_name: "api_call", external_customer_id: ext, properties: {} }))
        )
        const [, ingested] = yield* t.client.events.bulk({ payload: { events }, withResponse: true })
        expect(ingested.status).toBe(202)
        // an existing customer with a pending event (its own pending pass missed it)
        const sql = yield* PgClient.PgClient
        yield* sql`INSERT INTO customers (id, tenant_id, environment_id, external_id) VALUES ('cust_pendingexisting', ${t.scope.tenantId}, ${t.scope.environmentId}, 'p-other')`

        const outcomes = yield* asTenant(
          t.scope,
          Effect.flatMap(CustomerLinker, (l) =>
            l.linkMany(
              linkInputs(
                [
                  { externalId: "p-new-1", stripe: "cus_p1" },
                  { externalId: "p-new-2", stripe: "cus_p2" },
                  { externalId: "p-other", stripe: "cus_p3" }
                ],
                { onConflict: "skip", createCustomer: true, dryRun: false }
              )
            )
          )
        )
        expect(outcomes.map((o) => [o.customerCreated, o.mapping])).toEqual([
          [true, "created"],
          [true, "created"],
          [false, "created"]
        ])
        for (const [i, ext] of ["p-new-1", "p-new-2", "p-other"].entries()) {
          const listed = yield* t.client.events.list({ urlParams: { external_customer_id: ext } })
          expect(listed.events.map((e) => [e.status, e.customer_id])).toEqual([
            ["processed", outcomes[i]!.customerId],
            ["processed", outcomes[i]!.customerId]
          ])
        }
        const left = yield* sql<{ n: string }>`SELECT count(*) AS n FROM pending_events WHERE tenant_id = ${t.scope.tenantId}`
        expect(Number(left[0]!.n)).toBe(0)
      })
    )

    it.effect("stays consistent while single links create the same customers concurrently", () =>
      Effect.gen(function* () {
        const t = yield* newTenant("race")
        const page = Array.from({ length: 60 }, (_, i) => ({ externalId: `r-${i}`, stripe: `cus_r${i}` }))
        const inputs = linkInputs(page, { onConflict: "skip", createCustomer: true, dryRun: false })
        // the single links start from the other end, so they meet the batch somewhere in the middle
        const [batched, singlesReversed] = yield* asTenant(
          t.scope,
          Effect.flatMap(CustomerLinker, (l) =>
            Effect.all([l.linkMany(inputs), Effect.forEach([...inputs].reverse(), (input) => l.link({ ...input, source: "webhook" }), { concurrency: 8 })], {
              concurrency: 2
            })
          )
        )
        const singles = [...singlesReversed].reverse()
        const state = yield* asTenant(t.scope, stateOf({ customerIds: new Map(), mappingIds: new Map() }))
        expect(state.customers).toEqual(page.map((p) => p.externalId).sort())
        expect(state.mappings).toHaveLength(page.length)
        for (let i = 0; i < page.length; i++) {
          const b = batched[i]!
          const s = singles[i]!
          // one of the two created the customer and one wrote the mapping; both name the same rows
          expect(b.customerId).toBe(s.customerId)
          expect(b.mappingId).toBe(s.mappingId)
          expect([b.customerCreated, s.customerCreated].filter(Boolean)).toHaveLength(1)
          expect([b.mapping, s.mapping].sort()).toEqual(["created", "unchanged"])
          expect(state.mappings[i]).toMatch(/:active:(migration|webhook):/)
        }
      })
    )
  })
})

/**
 * The sync suites' harness, for `layer(…)` suites: the service (TestApp.layer) pointed at a fresh
 * Stripe emulator (rate limits off: these suites are about ledger and delivery, not pacing), and
 * helpers as effects on the test tenant. Configs and mappings go through the repositories (the
 * secret encrypted by the Encryption service), so these suites do not depend on the config API.
 */
import { Context, Effect, Layer } from "effect"
import type { EventInput } from "../../src/domain/Models.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { SyncBatchRepo } from "../../src/repositories/SyncBatchRepo.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import type { RunOptions, RunReport } from "../../src/sync/SyncPipeline.js"
import { SyncService } from "../../src/sync/SyncService.js"
import type { Backend } from "../support/app.js"
import { storeStripeConfig } from "../support/stripe-config.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, inTestTenant } from "../support/TestApp.js"
import * as O from "../support/oracle.js"
import { hoursAgo, type MeterSetup, prng, randomQty, STRIPE_KEY, stripeEnv } from "./support.js"

/** The Stripe emulator the service of `syncLayer` talks to. */
export class SyncEmulator extends Context.Tag("test/SyncEmulator")<SyncEmulator, StripeEmulatorHandle>() {}

/** TestApp.layer on `backend` with its Stripe API bases on a fresh emulator (`SyncEmulator`); `env` over `stripeEnv`. */
export const syncLayer = (options: { readonly backend?: Backend; readonly env?: Record<string, string> } = {}) => syncLayerOnClock(() => Date.now(), options)

/** Stores the test tenant's Stripe config (the emulator's key and account). */
export const configure = (opts: { readonly transport?: "stream" | "v1"; readonly windowMinutes?: number; readonly graceMinutes?: number } = {}) =>
  Effect.flatMap(SyncEmulator, (emulator) => inTestTenant(storeStripeConfig({ apiKey: STRIPE_KEY, accountId: emulator.accountId, ...opts })))

/** A meter (over the API), its Stripe meter `stripe_<name>` and the mapping between them. */
export const meter = (
  name: string,
  opts: { readonly aggregation?: "SUM" | "COUNT" | "MAX"; readonly field?: string; readonly wholeUnits?: boolean; readonly formula?: "sum" | "count" | "last" } = {}
) =>
  Effect.gen(function* () {
    const emulator = yield* SyncEmulator
    const aggregation = opts.aggregation ?? "SUM"
    const created = yield* (yield* ApiClient).meters.create({
      payload: { name, event_name: name, aggregation: aggregation === "COUNT" ? { type: aggregation } : { type: aggregation, field: opts.field ?? "qty" } }
    })
    const stripeEventName = `stripe_${name}`
    const m = yield* emulator.createMeter({
      display_name: name,
      event_name: stripeEventName,
      default_aggregation: { formula: opts.formula ?? "sum" },
      customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
      value_settings: { event_payload_key: "value" }
    })
    yield* inTestTenant(
      Effect.flatMap(MeterMappingRepo, (r) =>
        r.upsert({
          meterId: created.id,
          providerMeterId: m.id,
          stripeEventName,
          customerPayloadKey: "stripe_customer_id",
          valuePayloadKey: "value",
          formula: opts.formula ?? "sum",
          wholeUnits: opts.wholeUnits ?? false,
          syncEnabled: true
        })
      )
    )
    return { meterId: created.id, eventName: name, stripeEventName, providerMeterId: m.id } satisfies MeterSetup
  })

/** A customer (over the API) mapped to a new Stripe customer. */
export const customer = (externalId: string) =>
  Effect.gen(function* () {
    const created = yield* (yield* ApiClient).customers.create({ payload: { external_id: externalId } })
    return { customerId: created.id, stripeId: yield* mapCustomer(created.id) }
  })

/** Events sent over the API, 1,000 a request; any rejected event is a defect. */
export const ingest = (events: ReadonlyArray<EventInput>) =>
  Effect.gen(function* () {
    const api = yield* ApiClient
    for (let i = 0; i < events.length; i += 1000) {
      const res = yield* api.events.bulk({ payload: { events: events.slice(i, i + 1000) } })
      if (res.rejected.length > 0) return yield* Effect.dieMessage(`ingest rejected: ${JSON.stringify(res.rejected)}`)
    }
  })

/** The emulator's total of `stripeEventName` for a Stripe customer (exact decimal string). */
export const stripeTotal = (stripeCustomer: string, stripeEventName: string) => Effect.map(SyncEmulator, (e) => e.total(stripeCustomer, stripeEventName).sum)

/** The test tenant's sync batches. */
export const batches = inTestTenant(Effect.flatMap(SyncBatchRepo, (r) => r.list({ limit: 100_000 })))

/** One run of the pipeline for the test tenant (a scheduled run unless `options` says otherwise). */
export const sync = (options: RunOptions = { trigger: "schedule" }) =>
  inTestTenant(
    Effect.gen(function* () {
      const config = yield* Effect.flatMap(StripeConfigRepo, (r) => r.get)
      if (config._tag === "None") return yield* Effect.dieMessage("not configured")
      return yield* (yield* SyncService).runTenant(config.value, options)
    })
  )

/**
 * Succeeds once the tenant's Stripe circuit breaker admits calls again (closed or half-open, as
 * GET /v1/stripe/sync/status reports it), polling every 20 ms; dies if it stays open 600 rounds.
 */
export const breakerAdmits = Effect.gen(function* () {
  const api = yield* ApiClient
  for (let i = 0; i < 600; i++) {
    if ((yield* api.sync.status()).circuit_state !== "open") return
    yield* Effect.sleep("20 millis")
  }
  return yield* Effect.dieMessage("the Stripe circuit breaker stayed open")
})

/**
 * support.ts's `seedUsage` as an effect: customers × meters (`<prefix>_calls` COUNT,
 * `<prefix>_tokens` SUM) of seeded random usage over the given hours (ago), ingested; returns the
 * expected Stripe totals, keyed `${stripeCustomer}|${stripeEventName}`, from the raw events only.
 */
export const seedUsage = (opts: {
  readonly customers: number
  readonly events: number
  readonly seed: number
  readonly hours?: ReadonlyArray<number>
  readonly wholeUnits?: boolean
  readonly prefix?: string
}) =>
  Effect.gen(function* () {
    const prefix = opts.prefix ?? "m"
    const wholeUnits = opts.wholeUnits ?? false
    const meters = [
      yield* meter(`${prefix}_calls`, { aggregation: "COUNT", wholeUnits }),
      yield* meter(`${prefix}_tokens`, { aggregation: "SUM", field: "tokens", wholeUnits })
    ] as const
    const customers: Array<{ externalId: string; stripeId: string }> = []
    for (let i = 0; i < opts.customers; i++) {
      const externalId = `${prefix}c${i}`
      customers.push({ externalId, stripeId: (yield* customer(externalId)).stripeId })
    }
    const rand = prng(opts.seed)
    const hours = opts.hours ?? [2, 3, 4]
    const expected = new Map<string, Array<string>>()
    const events: Array<EventInput> = []
    for (let i = 0; i < opts.events; i++) {
      const c = customers[Math.floor(rand() * customers.length)]!
      const timestamp = hoursAgo(hours[Math.floor(rand() * hours.length)]!, Math.floor(rand() * 60))
      const useCalls = rand() < 0.5
      const m = useCalls ? meters[0] : meters[1]
      const qty = useCalls ? "1" : randomQty(rand)
      events.push({
        event_id: `${prefix}e${i}`,
        event_name: m.eventName,
        external_customer_id: c.externalId,
        timestamp,
        ...(useCalls ? {} : { properties: { tokens: qty } })
      })
      const k = `${c.stripeId}|${m.stripeEventName}`
      expected.set(k, [...(expected.get(k) ?? []), qty])
    }
    yield* ingest(events)
    return { meters, customers, expected: new Map([...expected].map(([k, v]) => [k, O.format(O.sum(v))])) }
  })

/** support.ts's `expectTotals`: the mismatches between `expected` and the emulator's totals (grand total included; none when all agree). */
export const expectTotals = (expected: ReadonlyMap<string, string>) =>
  Effect.map(SyncEmulator, (emulator) => {
    const mismatches: Array<string> = []
    for (const [k, sum] of expected) {
      const [c, e] = k.split("|") as [string, string]
      const got = emulator.total(c, e).sum
      if (O.compare(got, sum) !== 0) mismatches.push(`${k}: expected ${sum}, Stripe has ${got}`)
    }
    const all = O.format(O.sum(emulator.state.totals().map((t) => t.sum)))
    const want = O.format(O.sum([...expected.values()]))
    if (all !== want) mismatches.push(`grand total: expected ${want}, Stripe has ${all}`)
    return mismatches
  })

/** support.ts's `syncUntilSettled`: scheduled runs until no batch is pending or sending (or `max` runs), `between` after each unsettled one. */
export const syncUntilSettled = <E = never, R = never>(max = 30, between: Effect.Effect<void, E, R> = Effect.void as Effect.Effect<void, E, R>) =>
  Effect.gen(function* () {
    const reports: Array<RunReport> = []
    for (let i = 0; i < max; i++) {
      reports.push(yield* sync())
      if ((yield* batches).every((b) => b.syncStatus !== "pending" && b.syncStatus !== "sending")) return reports
      yield* between
    }
    return reports
  })

/**
 * `syncLayer` with its emulator reading the clock `now` instead of real time (the harness's
 * `emulatorNow`): for a test that runs the service on a shifted clock and needs Stripe to agree.
 */
export const syncLayerOnClock = (now: () => number, options: { readonly backend?: Backend; readonly env?: Record<string, string> } = {}) =>
  Layer.unwrapScoped(
    Effect.map(makeStripeEmulator({ apiKey: STRIPE_KEY, now, rateLimits: "off" }), (emulator) =>
      Layer.merge(TestApp.layer({ backend: options.backend ?? "pglite", env: { ...stripeEnv(emulator.url), ...options.env } }), Layer.succeed(SyncEmulator, emulator))
    )
  )

/** Maps a customer created without one (over the API) to a new Stripe customer; the Stripe id. */
export const mapCustomer = (customerId: string) =>
  Effect.gen(function* () {
    const c = yield* (yield* SyncEmulator).createCustomer({ metadata: { flexprice_customer: customerId } })
    yield* inTestTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId, providerCustomerId: c.id, source: "api" })))
    return c.id
  })

/**
 * `syncLayer` with its emulator validating stream requests as `streamValidation` says (the
 * harness's option of that name): "sync" refuses a whole stream request holding an invalid event
 * (400), for a test of how a refused request is charged; Stripe (and "async") accepts it and
 * reports the event later.
 */
export const syncLayerValidating = (streamValidation: "async" | "sync", options: { readonly backend?: Backend; readonly env?: Record<string, string> } = {}) =>
  Layer.unwrapScoped(
    Effect.map(makeStripeEmulator({ apiKey: STRIPE_KEY, now: () => Date.now(), rateLimits: "off", streamValidation }), (emulator) =>
      Layer.merge(TestApp.layer({ backend: options.backend ?? "pglite", env: { ...stripeEnv(emulator.url), ...options.env } }), Layer.succeed(SyncEmulator, emulator))
    )
  )

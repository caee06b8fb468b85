/**
 * Sync test harness: the full service (startTestApp) pointed at a Stripe emulator on loopback,
 * with helpers to configure a tenant (config, meters, mappings, customers), ingest usage and run
 * the pipeline. Configs and mappings go through the config engineer's repositories (the secret
 * is encrypted with the Encryption service), not the HTTP API, so these tests do not depend on it.
 */
import { Effect, Exit, Scope } from "effect"
import { prng } from "../../src/domain/Prng.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { SyncBatchRepo } from "../../src/repositories/SyncBatchRepo.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { SyncService } from "../../src/sync/SyncService.js"
import type { RunOptions, RunReport } from "../../src/sync/SyncPipeline.js"
import { type AppServices, type Backend, startTestApp, type TestApp, type TestAppOptions } from "../support/app.js"
import * as O from "../support/oracle.js"
import { storeStripeConfig } from "../support/stripe-config.js"

export const STRIPE_KEY = "sk_test_51FlexpriceSyncTests000000SECRET4242"

export const stripeEnv = (url: string): Record<string, string> => ({
  STRIPE_API_BASE: url,
  STRIPE_METER_EVENTS_API_BASE: url,
  STRIPE_RATE_LIMIT_TEST_PER_SECOND: "10000",
  STRIPE_METER_STREAM_RATE_LIMIT_PER_SECOND: "10000",
  STRIPE_MAX_CONCURRENCY: "16",
  STRIPE_RETRY_RATE_LIMITED_BASE_MS: "2",
  STRIPE_RETRY_UNAVAILABLE_BASE_MS: "2",
  STRIPE_BREAKER_COOLDOWN_SECONDS: "0.2",
  STRIPE_API_TIMEOUT_SECONDS: "10"
})

export interface MeterSetup {
  readonly meterId: string
  readonly eventName: string
  readonly stripeEventName: string
  readonly providerMeterId: string
}

export interface SyncHarness {
  readonly app: TestApp
  readonly emulator: StripeEmulatorHandle
  readonly scope: TenantScope
  readonly asTenant: <A, E>(effect: Effect.Effect<A, E, AppServices | CurrentTenant>) => Promise<A>
  readonly configure: (opts?: { transport?: "stream" | "v1"; windowMinutes?: number; graceMinutes?: number }) => Promise<void>
  readonly meter: (name: string, opts?: { aggregation?: "SUM" | "COUNT" | "MAX"; field?: string; wholeUnits?: boolean; formula?: "sum" | "count" | "last" }) => Promise<MeterSetup>
  /** A FlexPrice customer, plus (when `mapped`) a Stripe customer and the mapping. */
  readonly customer: (externalId: string, mapped?: boolean) => Promise<{ customerId: string; stripeId: string | null }>
  readonly mapCustomer: (customerId: string) => Promise<string>
  readonly ingest: (events: ReadonlyArray<Record<string, unknown>>) => Promise<void>
  readonly sync: (options?: RunOptions) => Promise<RunReport>
  readonly batches: () => Promise<ReadonlyArray<import("../../src/repositories/SyncBatchRepo.js").BatchRow>>
  readonly stripeTotal: (stripeCustomer: string, stripeEventName: string) => string
  readonly dispose: () => Promise<void>
}

export const startSyncHarness = async (
  options: {
    backend?: Backend
    env?: Record<string, string>
    extra?: TestAppOptions["extra"]
    /** the emulator's clock (default: real time), e.g. a TestClock's */
    emulatorNow?: () => number
    /** "sync": the emulator refuses a whole stream request holding an invalid event (400) */
    streamValidation?: "async" | "sync"
    /** backend `postgres`: this (shared) database instead of a fresh one, e.g. for a second replica */
    databaseUrl?: string
  } = {}
): Promise<SyncHarness> => {
  const emuScope = Effect.runSync(Scope.make())
  const emulator = await Effect.runPromise(
    // The sync suites are about ledger and delivery, not pacing: the product is configured well
    // above Stripe's test-mode limit (stripeEnv: 10,000 r/s, as a live key's higher limits
    // allow), so the emulator's test-mode limit (~25 r/s shared) is lifted here, explicitly.
    // Rate limiting itself is covered by the 429-storm tests (injected 429s), by
    // test/stripe/StripeBackPressure.test.ts and test/stripe-emulator/faithful.test.ts.
    makeStripeEmulator({
      apiKey: STRIPE_KEY,
      now: options.emulatorNow ?? (() => Date.now()),
      rateLimits: "off",
      ...(options.streamValidation ? { streamValidation: options.streamValidation } : {})
    }).pipe(Scope.extend(emuScope))
  )
  let app: TestApp
  try {
    app = await startTestApp({
      backend: options.backend ?? "pglite",
      env: { ...stripeEnv(emulator.url), ...options.env },
      ...(options.extra ? { extra: options.extra } : {}),
      ...(options.databaseUrl !== undefined ? { databaseUrl: options.databaseUrl } : {})
    })
  } catch (e) {
    await Effect.runPromise(Scope.close(emuScope, Exit.void))
    throw e
  }
  const scope = app.scope
  const asTenant = <A, E>(effect: Effect.Effect<A, E, AppServices | CurrentTenant>) => app.run(effect.pipe(Effect.provideService(CurrentTenant, scope)))

  const configure: SyncHarness["configure"] = async (opts = {}) => {
    await asTenant(
      storeStripeConfig({ apiKey: STRIPE_KEY, accountId: emulator.accountId, ...opts })
    )
  }

  const meter: SyncHarness["meter"] = async (name, opts = {}) => {
    const aggregation = opts.aggregation ?? "SUM"
    const res = await app.request("POST", "/v1/meters", {
      name,
      event_name: name,
      aggregation: { type: aggregation, field: aggregation === "COUNT" ? null : (opts.field ?? "qty") }
    })
    if (res.status !== 201) throw new Error(`meter create failed: ${res.status} ${res.text}`)
    const stripeEventName = `stripe_${name}`
    const m = await Effect.runPromise(
      emulator.createMeter({
        display_name: name,
        event_name: stripeEventName,
        default_aggregation: { formula: opts.formula ?? "sum" },
        customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
        value_settings: { event_payload_key: "value" }
      })
    )
    await asTenant(
      Effect.flatMap(MeterMappingRepo, (r) =>
        r.upsert({
          meterId: res.data.id,
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
    return { meterId: res.data.id, eventName: name, stripeEventName, providerMeterId: m.id }
  }

  const mapCustomer = async (customerId: string) => {
    const c = await Effect.runPromise(emulator.createCustomer({ metadata: { flexprice_customer: customerId } }))
    await asTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId, providerCustomerId: c.id, source: "api" })))
    return c.id
  }

  const customer: SyncHarness["customer"] = async (externalId, mapped = true) => {
    const res = await app.request("POST", "/v1/customers", { external_id: externalId })
    if (res.status !== 201) throw new Error(`customer create failed: ${res.status} ${res.text}`)
    const customerId = res.data.id as string
    return { customerId, stripeId: mapped ? await mapCustomer(customerId) : null }
  }

  const ingest: SyncHarness["ingest"] = async (events) => {
    for (let i = 0; i < events.length; i += 1000) {
      const res = await app.request("POST", "/v1/events/bulk", { events: events.slice(i, i + 1000) })
      if (res.status !== 202 || res.data.rejected.length > 0) throw new Error(`ingest failed: ${res.status} ${res.text}`)
    }
  }

  const sync: SyncHarness["sync"] = async (options = { trigger: "schedule" }) =>
    asTenant(
      Effect.gen(function* () {
        const service = yield* SyncService
        const config = yield* Effect.flatMap(StripeConfigRepo, (r) => r.get)
        if (config._tag === "None") return yield* Effect.die("not configured")
        return yield* service.runTenant(config.value, options)
      })
    )

  const batches = () =>
    asTenant(Effect.flatMap(SyncBatchRepo, (r) => r.list({ limit: 100_000 })))

  return {
    app,
    emulator,
    scope,
    asTenant,
    configure,
    meter,
    customer,
    mapCustomer,
    ingest,
    sync,
    batches,
    stripeTotal: (c, e) => emulator.total(c, e).sum,
    dispose: async () => {
      await app.dispose()
      await Effect.runPromise(Scope.close(emuScope, Exit.void))
    }
  }
}

export { prng }

/** A random quantity with up to 3 decimals, as a string (exact). */
export const randomQty = (rand: () => number): string => {
  const thousandths = Math.floor(rand() * 100_000)
  return O.format({ unscaled: BigInt(thousandths), scale: 3 })
}

export const HOUR = 3_600_000

/**
 * The hour the test file started in. Fixed for the file: a test that ingests "2 hours ago" and
 * then a late event for the same hour must name the same window even when the wall clock crosses
 * an hour boundary between the two (CI runs for ~20 minutes; computed on each call, the base
 * moves at the boundary and a "late" event lands in the next window — a run crossing 14:00:00
 * timed out scheduled-reconciliation, whose late event is named so).
 * Windows named from it only get older as the file runs: still closed, still within Stripe's
 * horizons.
 */
export const FILE_HOUR = Math.floor(Date.now() / HOUR) * HOUR

export const hoursAgo = (h: number, minuteOffset = 0) => new Date(FILE_HOUR - h * HOUR + minuteOffset * 60_000).toISOString()

/**
 * Customers × meters of usage over the given hours (ago); returns the expected Stripe totals,
 * keyed `${stripeCustomer}|${stripeEventName}`, computed from the raw events only.
 */
export const seedUsage = async (
  h: SyncHarness,
  opts: { customers: number; events: number; seed: number; hours?: ReadonlyArray<number>; wholeUnits?: boolean; prefix?: string }
) => {
  const meters = [
    await h.meter(`${opts.prefix ?? "m"}_calls`, { aggregation: "COUNT", wholeUnits: opts.wholeUnits ?? false }),
    await h.meter(`${opts.prefix ?? "m"}_tokens`, { aggregation: "SUM", field: "tokens", wholeUnits: opts.wholeUnits ?? false })
  ] as const
  const customers: Array<{ externalId: string; stripeId: string }> = []
  for (let i = 0; i < opts.customers; i++) {
    const externalId = `${opts.prefix ?? "m"}c${i}`
    const c = await h.customer(externalId)
    customers.push({ externalId, stripeId: c.stripeId! })
  }
  const rand = prng(opts.seed)
  const hours = opts.hours ?? [2, 3, 4]
  const expected = new Map<string, Array<string>>()
  const events: Array<Record<string, unknown>> = []
  for (let i = 0; i < opts.events; i++) {
    const c = customers[Math.floor(rand() * customers.length)]!
    const timestamp = hoursAgo(hours[Math.floor(rand() * hours.length)]!, Math.floor(rand() * 60))
    const useCalls = rand() < 0.5
    const m = useCalls ? meters[0] : meters[1]
    const qty = useCalls ? "1" : randomQty(rand)
    events.push({
      event_id: `${opts.prefix ?? "m"}e${i}`,
      event_name: m.eventName,
      external_customer_id: c.externalId,
      timestamp,
      ...(useCalls ? {} : { properties: { tokens: qty } })
    })
    const k = `${c.stripeId}|${m.stripeEventName}`
    expected.set(k, [...(expected.get(k) ?? []), qty])
  }
  await h.ingest(events)
  return { meters, customers, expected: new Map([...expected].map(([k, v]) => [k, O.format(O.sum(v))])) }
}

/** Every expected total equals the emulator's (and nothing else was sent). */
export const expectTotals = (h: SyncHarness, expected: ReadonlyMap<string, string>) => {
  const mismatches: Array<string> = []
  for (const [k, sum] of expected) {
    const [c, e] = k.split("|") as [string, string]
    const got = h.stripeTotal(c, e)
    if (O.compare(got, sum) !== 0) mismatches.push(`${k}: expected ${sum}, Stripe has ${got}`)
  }
  const all = O.format(O.sum(h.emulator.state.totals().map((t) => t.sum)))
  const want = O.format(O.sum([...expected.values()]))
  if (all !== want) mismatches.push(`grand total: expected ${want}, Stripe has ${all}`)
  return mismatches
}

/** Runs the pipeline until nothing is pending (or `max` runs). */
export const syncUntilSettled = async (h: SyncHarness, max = 30, between?: () => Promise<void>) => {
  const reports: Array<RunReport> = []
  for (let i = 0; i < max; i++) {
    reports.push(await h.sync())
    const open = (await h.batches()).filter((b) => b.syncStatus === "pending" || b.syncStatus === "sending")
    if (open.length === 0) return reports
    if (between) await between()
  }
  return reports
}

/**
 * Resolves once the tenant's Stripe circuit breaker admits calls again (closed or half-open, as
 * GET /v1/stripe/sync/status reports it): the condition a fixed sleep past the cool-down
 * (STRIPE_BREAKER_COOLDOWN_SECONDS) used to wait for between runs.
 */
export const breakerAdmits = async (h: SyncHarness): Promise<void> => {
  for (let i = 0; i < 600; i++) {
    const s = await h.app.request("GET", "/v1/stripe/sync/status")
    if (s.status !== 200) throw new Error(`sync status: ${s.status} ${s.text}`)
    if (s.data.circuit_state !== "open") return
    await new Promise<void>((r) => setTimeout(r, 20))
  }
  throw new Error("the Stripe circuit breaker stayed open")
}

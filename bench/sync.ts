/**
 * Sync benchmark (not a test): one scheduled sync run of 100,000 aggregates (50,000 customers ×
 * 2 meters, one hourly window) end to end — EventStore aggregation, ledger, push over the v2
 * meter event stream to the emulator on loopback — then a requirements-peak hour: 60,000 events
 * ingested through the real ingestion path and synced.
 *
 *   npx tsx bench/sync.ts                       # PGlite (embedded)
 *   npx tsx bench/sync.ts --clickhouse http://127.0.0.1:8123
 *   npx tsx bench/sync.ts --postgres postgres://postgres@127.0.0.1:5432/postgres
 *   npx tsx bench/sync.ts --customers 5000      # smaller
 *   npx tsx bench/sync.ts --trace               # time per span name and per SQL statement
 *   npx tsx bench/sync.ts --emulator same-process   # emulator on this event loop (default: child process)
 *   npx tsx bench/sync.ts --peak-events 0       # the 100,000 aggregates and their floor only
 *
 * The floor (bench/syncFloor.ts) is measured in the same run, before and after the product's
 * sync: the same number of stream requests from a bare SDK client against the same emulator plus
 * one bulk insert of as many ledger rows. The product is printed beside it, with the ratio.
 *
 * The emulator runs as a child process on loopback by default (production Stripe is remote; in
 * this process it would share the event loop, and with PGlite the CPU, with the service).
 * Prints wall times, Stripe requests and a totals check (emulator totals = generated totals).
 */
import type { AppServices } from "../src/LocalService.js"
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import * as Decimal from "../src/domain/Decimal.js"
import { newId, type TenantScope } from "../src/domain/Ids.js"
import { CurrentTenant } from "../src/domain/Tenant.js"
import { EventIngestor } from "../src/events/EventIngestor.js"
import { EventStore, type ProcessedEvent } from "../src/events/EventStore.js"
import { MeterMappingRepo } from "../src/repositories/MeterMappingRepo.js"
import { MeterRepo } from "../src/repositories/MeterRepo.js"
import { StripeConfigRepo } from "../src/repositories/StripeConfigRepo.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"
import { SyncService } from "../src/sync/SyncService.js"
import { Telemetry, TelemetryTest } from "../src/observability/Telemetry.js"
import { startBenchApp } from "./harness.js"
import { callsSince, type EmulatorMode, startEmulator } from "./emulatorTarget.js"
import { prng } from "../src/domain/Prng.js"
import { storeStripeConfig } from "../test/support/stripe-config.js"
import { type Floor, measureFloor } from "./syncFloor.js"

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}
const CUSTOMERS = Number(arg("customers") ?? 50_000)
const PEAK_EVENTS = Number(arg("peak-events") ?? 60_000)
const clickhouseUrl = arg("clickhouse")
const postgresUrl = arg("postgres")
const emulatorMode: EmulatorMode = arg("emulator") === "same-process" ? "same-process" : "child"
const KEY = "sk_test_51FlexpriceBench00000000SECRET4242"
const HOUR = 3_600_000

const rand = prng(12345)
const qty = () => Decimal.normalize(`${Math.floor(rand() * 1000)}.${String(Math.floor(rand() * 1000)).padStart(3, "0")}`)

const main = async () => {
  const emulator = await startEmulator(emulatorMode, KEY)
  const app = await startBenchApp({
    ...(clickhouseUrl ? { clickhouseUrl } : {}),
    ...(postgresUrl ? { postgresUrl } : {}),
    env: {
      STRIPE_API_BASE: emulator.url,
      STRIPE_METER_EVENTS_API_BASE: emulator.url,
      FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
      ...(clickhouseUrl ? { FLEXPRICE_CLICKHOUSE_DATABASE: `flexprice_bench_sync_${Date.now().toString(36)}` } : {})
    }
  })
  const run = <A, E>(e: Effect.Effect<A, E, AppServices>) => app.runtime.runPromise(e)
  const backend = `${postgresUrl ? "PostgreSQL" : "PGlite"}${clickhouseUrl ? " + ClickHouse" : ""}`
  console.log(
    new Date().toISOString().slice(11, 19),
    `backend: ${backend}; emulator: ${emulatorMode}; customers: ${CUSTOMERS}; peak events: ${PEAK_EVENTS}`
  )

  const setupTenant = async (name: string, customers: number) => {
    const t = await run(Effect.flatMap(TenantRepo, (r) => r.create(`${name}-${Date.now()}`, "bench")))
    const scope = { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope
    const asTenant = <A, E>(e: Effect.Effect<A, E, AppServices | CurrentTenant>) => run(e.pipe(Effect.provideService(CurrentTenant, scope)))
    await asTenant(
      storeStripeConfig({ apiKey: KEY, accountId: emulator.accountId })
    )
    const meters: Array<{ id: string; event: string; stripeEvent: string }> = []
    for (const [n, type] of [["calls", "COUNT"], ["tokens", "SUM"]] as const) {
      const event = `${name}_${n}`
      const m = await asTenant(Effect.flatMap(MeterRepo, (r) => r.create({ name: event, event_name: event, aggregation: { type, field: type === "SUM" ? "tokens" : null } })))
      const sm = await emulator.createMeter({ display_name: event, event_name: `stripe_${event}` })
      await asTenant(
        Effect.flatMap(MeterMappingRepo, (r) =>
          r.upsert({
            meterId: m.id,
            providerMeterId: sm.id,
            stripeEventName: `stripe_${event}`,
            customerPayloadKey: "stripe_customer_id",
            valuePayloadKey: "value",
            formula: "sum",
            wholeUnits: false,
            syncEnabled: true
          })
        )
      )
      meters.push({ id: m.id, event, stripeEvent: `stripe_${event}` })
    }
    // customers + mappings in bulk (setup, not measured)
    const rows = (await emulator.createCustomers(customers)).map((stripe, i) => ({
      id: newId.customer(),
      external_id: `${name}-c${i}`,
      stripe,
      mapping: newId.mapping()
    }))
    for (let i = 0; i < rows.length; i += 10_000) {
      const json = JSON.stringify(rows.slice(i, i + 10_000))
      await asTenant(
        Effect.flatMap(PgClient.PgClient, (sql) =>
          Effect.all([
            sql`INSERT INTO customers (id, tenant_id, environment_id, external_id)
              SELECT r.id, ${scope.tenantId}, ${scope.environmentId}, r.external_id
              FROM jsonb_to_recordset(${json}::jsonb) AS r(id text, external_id text)`,
            sql`INSERT INTO customer_integration_mappings (id, tenant_id, environment_id, customer_id, provider_customer_id)
              SELECT r.mapping, ${scope.tenantId}, ${scope.environmentId}, r.id, r.stripe
              FROM jsonb_to_recordset(${json}::jsonb) AS r(id text, mapping text, stripe text)`
          ])
        )
      )
    }
    return { scope, asTenant, meters, customers: rows }
  }

  const syncOnce = async (asTenant: <A, E>(e: Effect.Effect<A, E, AppServices | CurrentTenant>) => Promise<A>) => {
    const callsBefore = await emulator.calls()
    const started = performance.now()
    const report = await asTenant(
      Effect.gen(function* () {
        const config = yield* Effect.flatMap(StripeConfigRepo, (r) => r.get)
        if (config._tag === "None") return yield* Effect.die("no config")
        if (!process.argv.includes("--trace")) return yield* Effect.flatMap(SyncService, (s) => s.runTenant(config.value, { trigger: "schedule" }))
        // --trace: time per span name (in-memory exporter)
        return yield* Effect.gen(function* () {
          const r = yield* Effect.flatMap(SyncService, (s) => s.runTenant(config.value, { trigger: "schedule" }))
          const spans = yield* Effect.flatMap(TelemetryTest, (t) => t.spans)
          const by = new Map<string, { n: number; ms: number }>()
          for (const sp of spans) {
            const ms = sp.duration[0] * 1000 + sp.duration[1] / 1e6
            const e = by.get(sp.name) ?? { n: 0, ms: 0 }
            by.set(sp.name, { n: e.n + 1, ms: e.ms + ms })
          }
          for (const [name, v] of [...by].sort((a, b) => b[1].ms - a[1].ms)) console.log(`  ${name}: ${v.n} spans, ${v.ms.toFixed(0)} ms`)
          const slow = spans
            .filter((sp) => sp.name === "sql.execute")
            .map((sp) => ({ ms: sp.duration[0] * 1000 + sp.duration[1] / 1e6, q: String(sp.attributes["db.query.text"] ?? "").replace(/\s+/g, " ").slice(0, 90) }))
          const byQ = new Map<string, { n: number; ms: number }>()
          for (const x of slow) byQ.set(x.q, { n: (byQ.get(x.q)?.n ?? 0) + 1, ms: (byQ.get(x.q)?.ms ?? 0) + x.ms })
          for (const [q, v] of [...byQ].sort((a, b) => b[1].ms - a[1].ms).slice(0, 8)) console.log(`    sql ${v.n}× ${v.ms.toFixed(0)} ms: ${q}`)
          return r
        }).pipe(Effect.provide(Telemetry.layerTest))
      })
    )
    const ms = performance.now() - started
    const calls = callsSince(callsBefore, await emulator.calls())
    return { ms, report, calls: calls.total, byEndpoint: calls.byEndpoint }
  }

  const check = async (expected: Map<string, Array<string>>) => {
    let bad = 0
    const totals = await emulator.totals()
    for (const [k, qs] of expected) {
      const [c, e] = k.split("|") as [string, string]
      if (!Decimal.equals(totals.get(`${c}\u0000${e}`) ?? "0", Decimal.sum(qs))) bad++
    }
    return bad
  }

  // ---------------------------------------------------------------- 100,000 aggregates
  {
    const t0 = performance.now()
    const { scope, asTenant, meters, customers } = await setupTenant("agg", CUSTOMERS)
    const windowStart = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR
    const expected = new Map<string, Array<string>>()
    const processed: Array<ProcessedEvent> = []
    let n = 0
    for (const c of customers) {
      for (const m of meters) {
        const q = m.event.endsWith("calls") ? String(1 + Math.floor(rand() * 20)) : qty()
        processed.push({
          tenantId: scope.tenantId,
          environmentId: scope.environmentId,
          eventId: `p${n++}`,
          customerId: c.id,
          meterId: m.id,
          eventName: m.event,
          timestamp: new Date(windowStart + Math.floor(rand() * HOUR)),
          ingestedAt: new Date(Date.now() - 60_000),
          qtyTotal: q,
          qtyBillable: q
        })
        expected.set(`${c.stripe}|${m.stripeEvent}`, [q])
      }
    }
    for (let i = 0; i < processed.length; i += 5000) await run(Effect.flatMap(EventStore, (s) => s.insertProcessed(processed.slice(i, i + 5000))))
    console.log(new Date().toISOString().slice(11, 19), `setup: ${customers.length} customers, ${processed.length} processed rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const floorInput = {
      emulatorUrl: emulator.url,
      apiKey: KEY,
      stripeCustomers: customers.map((c) => c.stripe),
      requests: Math.ceil(processed.length / 100),
      concurrency: 16, // FLEXPRICE_SYNC_PUSH_CONCURRENCY's default, what the product runs with
      rows: processed.length,
      windowStart: new Date(windowStart),
      run
    }
    for (const tag of ["a", "b"]) for (const i of [0, 1]) await emulator.createMeter({ display_name: `floor ${tag}${i}`, event_name: `floor_${tag}_${i}` })
    const floors: Array<Floor> = [await measureFloor(floorInput, "a")]
    const r = await syncOnce(asTenant)
    floors.push(await measureFloor(floorInput, "b"))
    const s = (ms: number) => (ms / 1000).toFixed(2)
    const floorMs = floors.reduce((a, f) => a + f.totalMs, 0) / floors.length
    console.log(
      `floor (before; after the product): stream ${floors.map((f) => s(f.streamMs)).join("; ")} s + ledger insert ${floors.map((f) => s(f.insertMs)).join("; ")} s ` +
        `= ${floors.map((f) => s(f.totalMs)).join("; ")} s`
    )
    console.log(`product vs floor: ${s(r.ms)} s vs ${s(floorMs)} s = ${(r.ms / floorMs).toFixed(2)}× (goal ≤ 3×)`)
    console.log(
      `sync of ${r.report.batchesCreated} aggregates: ${(r.ms / 1000).toFixed(2)} s wall, ${r.calls} Stripe calls ` +
        `(${JSON.stringify(r.byEndpoint)}), synced ${r.report.batchesSynced}, failed ${r.report.batchesFailed}, ` +
        `totals mismatched: ${await check(expected)}`
    )
    const again = await syncOnce(asTenant)
    console.log(new Date().toISOString().slice(11, 19), `re-run: ${(again.ms / 1000).toFixed(2)} s, ${again.calls} Stripe calls, ${again.report.batchesCreated} batches`)
  }

  // ---------------------------------------------------------------- peak hour: 60,000 events
  if (PEAK_EVENTS > 0) {
    const { asTenant, meters, customers } = await setupTenant("peak", 1000)
    const windowStart = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR
    const expected = new Map<string, Array<string>>()
    const raws: Array<Record<string, unknown>> = []
    for (let i = 0; i < PEAK_EVENTS; i++) {
      const c = customers[Math.floor(rand() * customers.length)]!
      const m = meters[i % 2]!
      const q = m.event.endsWith("calls") ? "1" : qty()
      raws.push({
        event_id: `pk${i}`,
        event_name: m.event,
        external_customer_id: c.external_id,
        timestamp: new Date(windowStart + Math.floor(rand() * HOUR)).toISOString(),
        ...(m.event.endsWith("calls") ? {} : { properties: { tokens: q } })
      })
      const k = `${c.stripe}|${m.stripeEvent}`
      expected.set(k, [...(expected.get(k) ?? []), q])
    }
    const t0 = performance.now()
    for (let i = 0; i < raws.length; i += 1000) await asTenant(Effect.flatMap(EventIngestor, (ing) => ing.ingest(raws.slice(i, i + 1000))))
    console.log(new Date().toISOString().slice(11, 19), `peak hour: ingested ${raws.length} events in ${((performance.now() - t0) / 1000).toFixed(2)} s`)
    const r = await syncOnce(asTenant)
    console.log(
      `peak hour sync: ${r.report.batchesCreated} aggregates in ${(r.ms / 1000).toFixed(2)} s wall, ${r.calls} Stripe calls, ` +
        `totals mismatched: ${await check(expected)}`
    )
  }

  await app.dispose()
  await emulator.close()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

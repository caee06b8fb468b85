/**
 * Crash test: a real `flexprice serve` process (embedded PGlite, built-in schedule) syncing to
 * the emulator is SIGKILLed at several points of a sync and restarted on the same data
 * directory; at the end Stripe's totals equal the totals of the raw events, and no identifier
 * was accepted twice.
 *
 * Kill points: (1) Stripe accepted a stream request but its answer is held (the ledger still
 * says `sending`); (2) a request is held before Stripe applies it, and applied after the
 * process died; (3) a random instant while chunks are in flight (slow Stripe); then a final
 * process finishes the work.
 */
import { Effect, Exit, Layer, ManagedRuntime, ConfigProvider, Logger, LogLevel, Redacted, Scope } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { AppLive } from "../../src/App.js"
import { CustomerService } from "../../src/customers/CustomerService.js"
import type { TenantScope } from "../../src/domain/Ids.js"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { EventIngestor } from "../../src/events/EventIngestor.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { MeterRepo } from "../../src/repositories/MeterRepo.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { SyncBatchRepo } from "../../src/repositories/SyncBatchRepo.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { Encryption } from "../../src/security/Encryption.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { freshDataDir } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo, prng, randomQty, STRIPE_KEY, stripeEnv } from "./support.js"

const ROOT = path.resolve(import.meta.dirname, "../..")
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const srv = net.createServer()
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
    srv.on("error", reject)
  })

describe("crash safety of a real serve process", () => {
  const emuScope = Effect.runSync(Scope.make())
  let emulator: StripeEmulatorHandle
  let dataDir: string
  const children: Array<ChildProcess> = []
  let logs = ""

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.pid) try { process.kill(-c.pid, "SIGKILL") } catch { /* gone */ }
    await Effect.runPromise(Scope.close(emuScope, Exit.void))
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it("ends with Stripe totals equal to the raw totals after SIGKILLs mid-sync", { timeout: 240_000 }, async () => {
    emulator = await Effect.runPromise(makeStripeEmulator({ apiKey: STRIPE_KEY, now: () => Date.now() }).pipe(Scope.extend(emuScope)))
    dataDir = freshDataDir()
    const env: Record<string, string> = {
      ...stripeEnv(emulator.url),
      FLEXPRICE_DATA_DIR: dataDir,
      FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}`,
      FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
      FLEXPRICE_SCHEDULE_ENABLED: "true",
      FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: "1",
      FLEXPRICE_SYNC_LEASE_SECONDS: "2",
      FLEXPRICE_SYNC_PUSH_CONCURRENCY: "2",
      STRIPE_SYNC_GRACE_PERIOD_MINUTES: "0",
      FLEXPRICE_LOG_LEVEL: "Warning",
      OTEL_SDK_DISABLED: "true"
    }

    // ---- setup in process, then release the data directory to the serve processes
    const runtime = ManagedRuntime.make(
      AppLive.pipe(
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ ...env, FLEXPRICE_HTTP_ADDR: "127.0.0.1:0" }))))),
        Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
      )
    )
    const expected = new Map<string, Array<string>>()
    const stripeEventName = (m: string) => `stripe_${m}`
    let scope!: TenantScope
    try {
      const t = await runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create("crash", "test")))
      scope = { tenantId: t.tenantId, environmentId: t.environmentId } as TenantScope
      const asTenant = <A, E>(e: Effect.Effect<A, E, any>) =>
        runtime.runPromise(e.pipe(Effect.provideService(CurrentTenant, scope)) as Effect.Effect<A, E, never>)
      await asTenant(
        Effect.gen(function* () {
          const enc = yield* Encryption
          yield* (yield* StripeConfigRepo).upsert({
            apiKeyEncrypted: yield* enc.encrypt(Redacted.make(STRIPE_KEY)),
            apiKeyHint: "sk_test_…4242",
            webhookSecretEncrypted: null,
            keyVersion: enc.newestVersion,
            syncEnabled: true,
            aggregationWindowMinutes: 60,
            gracePeriodMinutes: 0,
            transport: "stream",
            livemode: false,
            stripeAccountId: emulator.accountId
          })
        })
      )
      const meters: Record<string, string> = {}
      for (const [name, type] of [["calls", "COUNT"], ["tokens", "SUM"]] as const) {
        const row = await asTenant(
          Effect.flatMap(MeterRepo, (r) =>
            r.create({ name, event_name: name, aggregation: { type, field: type === "COUNT" ? null : "tokens" } })
          )
        )
        meters[name] = row.id
        const sm = await Effect.runPromise(
          emulator.createMeter({ display_name: name, event_name: stripeEventName(name), default_aggregation: { formula: "sum" } })
        )
        await asTenant(
          Effect.flatMap(MeterMappingRepo, (r) =>
            r.upsert({
              meterId: row.id,
              providerMeterId: sm.id,
              stripeEventName: stripeEventName(name),
              customerPayloadKey: "stripe_customer_id",
              valuePayloadKey: "value",
              formula: "sum",
              wholeUnits: false,
              syncEnabled: true
            })
          )
        )
      }
      const customers: Array<{ externalId: string; stripeId: string }> = []
      for (let i = 0; i < 300; i++) {
        const externalId = `k${i}`
        const c = await asTenant(Effect.flatMap(CustomerService, (s) => s.create({ externalId })))
        const sc = await Effect.runPromise(emulator.createCustomer({}))
        await asTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId: c.id, providerCustomerId: sc.id, source: "api" })))
        customers.push({ externalId, stripeId: sc.id })
      }
      const rand = prng(99)
      const raws: Array<Record<string, unknown>> = []
      for (let i = 0; i < 4000; i++) {
        const c = customers[Math.floor(rand() * customers.length)]!
        const calls = rand() < 0.5
        const qty = calls ? "1" : randomQty(rand)
        raws.push({
          event_id: `k${i}`,
          event_name: calls ? "calls" : "tokens",
          external_customer_id: c.externalId,
          timestamp: hoursAgo(2 + Math.floor(rand() * 3), Math.floor(rand() * 60)),
          ...(calls ? {} : { properties: { tokens: qty } })
        })
        const k = `${c.stripeId}|${stripeEventName(calls ? "calls" : "tokens")}`
        expected.set(k, [...(expected.get(k) ?? []), qty])
      }
      for (let i = 0; i < raws.length; i += 1000) await asTenant(Effect.flatMap(EventIngestor, (ing) => ing.ingest(raws.slice(i, i + 1000))))
    } finally {
      await runtime.dispose()
    }
    const want = new Map([...expected].map(([k, v]) => [k, O.format(O.sum(v))]))

    // ---- serve processes
    const start = async (attempt = 1): Promise<ChildProcess> => {
      const port = await freePort()
      const child = spawn(process.execPath, ["--import", "tsx", "src/bin/flexprice.ts", "serve"], {
        cwd: ROOT,
        env: { ...process.env, ...env, FLEXPRICE_HTTP_ADDR: `127.0.0.1:${port}` },
        detached: true,
        stdio: ["ignore", "pipe", "pipe"]
      })
      children.push(child)
      child.stdout!.on("data", (d) => (logs += d))
      child.stderr!.on("data", (d) => (logs += d))
      // up when /healthz answers; a process that exits early (e.g. a port taken meanwhile) is retried
      for (let i = 0; i < 600; i++) {
        if (child.exitCode !== null) break
        const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)
        if (ok) return child
        await sleep(100)
      }
      if (child.exitCode !== null && attempt < 3) return start(attempt + 1)
      throw new Error(`serve did not start; output:\n${logs.slice(-6000)}`)
    }
    const awaitHeld = async () => {
      const exit = await Effect.runPromiseExit(emulator.awaitHeld(1).pipe(Effect.timeout("90 seconds")))
      if (Exit.isFailure(exit)) throw new Error(`no Stripe request reached the emulator; serve output:\n${logs.slice(-6000)}`)
    }
    const kill = async (child: ChildProcess) => {
      process.kill(-child.pid!, "SIGKILL")
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once("exit", r))
    }
    const streamPath = (r: { method: string; path: string }) => r.method === "POST" && r.path.startsWith("/v2/billing/meter_event_stream")
    const totalsMatch = () => [...want].every(([k, sum]) => {
      const [c, e] = k.split("|") as [string, string]
      return O.compare(emulator.total(c, e).sum, sum) === 0
    })

    // (1) Stripe accepted the request; the process dies before it hears back
    emulator.holdNext(streamPath, { applyFirst: true })
    let child = await start()
    await awaitHeld()
    await kill(child)
    const afterFirst = emulator.state.meterEvents().length
    expect(afterFirst).toBeGreaterThan(0)
    await Effect.runPromise(emulator.release())

    // (2) the request is held before Stripe applies it; applied after the process died
    emulator.holdNext(streamPath, { applyFirst: false, count: 1 })
    child = await start()
    await awaitHeld()
    await kill(child)
    await Effect.runPromise(emulator.release())

    // (3) a random instant with chunks in flight against a slow Stripe
    await Effect.runPromise(emulator.setFaults({ latencyMs: 150 }))
    const before3 = emulator.state.meterEvents().length
    child = await start()
    for (let i = 0; i < 600 && emulator.state.meterEvents().length === before3; i++) await sleep(100)
    await sleep(200 + Math.floor(Math.random() * 300))
    await kill(child)
    emulator.resetFaults()

    // the last process finishes the work
    child = await start()
    for (let i = 0; i < 900 && !totalsMatch(); i++) await sleep(100)
    await sleep(3_000) // more ticks: nothing else may be sent
    await kill(child)

    const mismatches = [...want].filter(([k, sum]) => {
      const [c, e] = k.split("|") as [string, string]
      return O.compare(emulator.total(c, e).sum, sum) !== 0
    })
    expect(mismatches, logs.slice(-4000)).toEqual([])
    expect(O.format(O.sum(emulator.state.totals().map((t) => t.sum)))).toBe(O.format(O.sum([...want.values()])))
    const ids = emulator.state.meterEvents().map((e) => e.identifier)
    expect(new Set(ids).size).toBe(ids.length)
    expect(emulator.state.duplicatesIgnored()).toBeGreaterThan(0) // the resend of round (1) was deduplicated

    // the ledger agrees: every batch synced, one accepted meter event each
    const check = ManagedRuntime.make(
      AppLive.pipe(
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ ...env, FLEXPRICE_HTTP_ADDR: "127.0.0.1:0" }))))),
        Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
      )
    )
    try {
      const batches = await check.runPromise(
        Effect.flatMap(SyncBatchRepo, (r) => r.list({ limit: 100_000 })).pipe(Effect.provideService(CurrentTenant, scope))
      )
      expect(batches.filter((b) => b.syncStatus !== "synced").map((b) => [b.syncStatus, b.errorCode])).toEqual([])
      expect(new Set(batches.map((b) => b.identifier))).toEqual(new Set(ids))
    } finally {
      await check.dispose()
    }
  })
})

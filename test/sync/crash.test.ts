/**
 * Crash test: a real `flexprice serve` process (embedded PGlite, built-in schedule) syncing to
 * the emulator is SIGKILLed at several points of a sync and restarted on the same data
 * directory; at the end Stripe's totals equal the totals of the raw events, and no identifier
 * was accepted twice.
 *
 * Kill points: (1) Stripe accepted a stream request but its answer is held (the ledger still
 * says `sending`); (2) a request is held before Stripe applies it, and applied after the
 * process died; (3) a random instant while chunks are in flight (slow Stripe); then a final
 * process finishes the work. The instant of (3) comes from a seed printed at the start
 * (FLEXPRICE_CRASH_SEED=<seed> replays it) and named in every failure message.
 *
 * Exactly-once is counted on what the emulator received, duplicates it ignored included: resends
 * are expected only of what a killed process left `sending`, and once the totals match, further
 * scheduler passes send nothing at all. On PostgreSQL (FLEXPRICE_TEST_POSTGRES_URL) the serve
 * processes share a fresh database on that server instead of a data directory.
 */
import { Effect, Exit, Layer, ManagedRuntime, ConfigProvider, Logger, LogLevel, Scope } from "effect"
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
import { SyncBatchRepo } from "../../src/repositories/SyncBatchRepo.js"
import { TenantRepo } from "../../src/repositories/TenantRepo.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { type Backend, forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo, prng, randomQty, STRIPE_KEY, stripeEnv } from "./support.js"
import { storeStripeConfig } from "../support/stripe-config.js"

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

/** The kill instant's seed: FLEXPRICE_CRASH_SEED replays a run, otherwise a fresh one (logged). */
const killSeed = (): number => {
  const given = process.env["FLEXPRICE_CRASH_SEED"]
  const seed = given !== undefined && given !== "" ? Number(given) : randomBytes(4).readUInt32LE(0)
  if (!Number.isSafeInteger(seed)) throw new Error(`FLEXPRICE_CRASH_SEED must be an integer, got ${given}`)
  return seed
}

forEachBackend(["pglite", "postgres"], (backend: Backend) => describe(`crash safety of a real serve process (${backend})`, () => {
  const emuScope = Effect.runSync(Scope.make())
  let emulator: StripeEmulatorHandle
  let dataDir: string | undefined
  let dropDatabase: (() => Promise<void>) | undefined
  const children: Array<ChildProcess> = []
  let logs = ""

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.pid) try { process.kill(-c.pid, "SIGKILL") } catch { /* gone */ }
    await Effect.runPromise(Scope.close(emuScope, Exit.void))
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true })
    await dropDatabase?.().catch(() => undefined)
  })

  it("ends with Stripe totals equal to the raw totals after SIGKILLs mid-sync", { timeout: 600_000 }, async () => {
    const seed = killSeed()
    const rerun = `kill seed ${seed} (replay: FLEXPRICE_CRASH_SEED=${seed})`
    console.info(`crash test (${backend}): ${rerun}`)
    const killRand = prng(seed)
    emulator = await Effect.runPromise(makeStripeEmulator({ apiKey: STRIPE_KEY, now: () => Date.now() }).pipe(Scope.extend(emuScope)))
    const storage: Record<string, string> = {}
    if (backend === "postgres") {
      const db = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
      dropDatabase = db.drop
      storage["FLEXPRICE_DATABASE_URL"] = db.url
    } else {
      dataDir = freshDataDir()
      storage["FLEXPRICE_DATA_DIR"] = dataDir
    }
    const env: Record<string, string> = {
      ...stripeEnv(emulator.url),
      ...storage,
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
      const asTenant = <A, E, R>(e: Effect.Effect<A, E, R>) =>
        runtime.runPromise(e.pipe(Effect.provideService(CurrentTenant, scope)) as Effect.Effect<A, E, never>)
      await asTenant(
        storeStripeConfig({ apiKey: STRIPE_KEY, accountId: emulator.accountId, graceMinutes: 0 })
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
    const start = async (attempt = 1, portOut?: { value: number }): Promise<ChildProcess> => {
      const port = await freePort()
      if (portOut) portOut.value = port
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
      if (child.exitCode !== null && attempt < 3) return start(attempt + 1, portOut)
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
    await sleep(200 + Math.floor(killRand() * 300))
    await kill(child)
    emulator.resetFaults()

    // the last process finishes the work
    const port = { value: 0 }
    child = await start(1, port)
    for (let i = 0; i < 900 && !totalsMatch(); i++) await sleep(100)
    expect(totalsMatch(), `${rerun}\n${logs.slice(-4000)}`).toBe(true)
    // three more scheduler passes of this process (its heartbeat gauge) send nothing at all
    const receivedAtMatch = emulator.state.received().length
    const heartbeats = new Set<string>()
    for (let i = 0; i < 600 && heartbeats.size < 4; i++) {
      const text = await fetch(`http://127.0.0.1:${port.value}/metrics`).then((r) => r.text(), () => "")
      const beat = /^flexprice_sync_scheduler_heartbeat_timestamp_seconds(?:\{[^}]*\})? (\S+)/m.exec(text)?.[1]
      if (beat !== undefined && beat !== "0") heartbeats.add(beat)
      if (heartbeats.size < 4) await sleep(100)
    }
    expect(heartbeats.size, `${rerun}: the scheduler heartbeat never advanced`).toBe(4)
    expect(emulator.state.received().length, rerun).toBe(receivedAtMatch)
    await kill(child)

    const mismatches = [...want].filter(([k, sum]) => {
      const [c, e] = k.split("|") as [string, string]
      return O.compare(emulator.total(c, e).sum, sum) !== 0
    })
    expect(mismatches, `${rerun}\n${logs.slice(-4000)}`).toEqual([])
    expect(O.format(O.sum(emulator.state.totals().map((t) => t.sum))), rerun).toBe(O.format(O.sum([...want.values()])))
    const ids = emulator.state.meterEvents().map((e) => e.identifier)
    expect(new Set(ids).size, rerun).toBe(ids.length)
    // what was received, duplicates included: every identifier received was accepted once, and
    // the resend of round (1) (accepted, answer lost) arrived again and was deduplicated
    const received = emulator.state.received()
    expect(received.filter((r) => r.outcome === "accepted").length, rerun).toBe(ids.length)
    expect(new Set(received.map((r) => r.identifier)), rerun).toEqual(new Set(ids))
    expect(received.filter((r) => r.outcome === "duplicate").length, rerun).toBeGreaterThan(0)

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
      expect(batches.filter((b) => b.syncStatus !== "synced").map((b) => [b.syncStatus, b.errorCode]), rerun).toEqual([])
      expect(new Set(batches.map((b) => b.identifier)), rerun).toEqual(new Set(ids))
    } finally {
      await check.dispose()
    }
  })
}))

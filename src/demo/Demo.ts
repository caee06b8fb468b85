/**
 * `flexprice demo` (SPEC §11): the whole product in one process, on real paths only.
 *
 * - the service is built from the same Layers as `serve` (HTTP API on a free loopback port, AppLive,
 *   the sync schedule, telemetry) over a fresh embedded PGlite directory — or PostgreSQL/ClickHouse
 *   when FLEXPRICE_DATABASE_URL / FLEXPRICE_CLICKHOUSE_URL are set;
 * - the Stripe emulator runs on another free port; the service's Stripe client talks to it over
 *   HTTP (STRIPE_API_BASE / STRIPE_METER_EVENTS_API_BASE) and it sends signed webhooks to the
 *   service's real webhook endpoint;
 * - everything the demo does to the service goes through the HTTP API with fetch, except creating
 *   the tenant (what `flexprice tenant create` does, in process).
 *
 * Expected totals come from the generator (exact decimals over what was sent), and are compared
 * with our ledger (sync API) and with what the emulator received.
 */
import { HttpServer } from "@effect/platform"
import { Clock, ConfigProvider, Console, Data, Duration, Effect, Layer, Logger, LogLevel, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { AppLive } from "../App.js"
import * as Decimal from "../domain/Decimal.js"
import { HttpApiLive, NodeServerLive } from "../http/Server.js"
import { Telemetry } from "../observability/Telemetry.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { makeStripeEmulator, type StripeEmulatorHandle } from "../stripe-emulator/index.js"
import { SyncScheduler } from "../sync/SyncScheduler.js"
import { DEMO_METERS, generateUsage, HOUR_MS, Totals, type UsageEvent } from "./Generator.js"
import { formatReport, formatSeconds } from "./Report.js"
import type { ReconciliationReport } from "../sync/Reconciliation.js"

export class DemoFailed extends Data.TaggedError("DemoFailed")<{ readonly message: string }> {}

export interface DemoOptions {
  /** Stripe customers onboarded by webhooks (default 200). */
  readonly customers?: number
  /** Usage events in the hour (default 60,000). */
  readonly events?: number
  /** Late events for the same hour after the first sync (default 1% of events, at least 10). */
  readonly late?: number
  /** Inject 429s and 5xx into the meter event calls of the first sync (default true). */
  readonly faults?: boolean
  /** Keep the embedded data directory (default false: removed at the end). */
  readonly keep?: boolean
  /** PRNG seed of the usage (default 20_240_601). */
  readonly seed?: number
  /** Extra configuration, read before the process environment (tests). */
  readonly env?: Readonly<Record<string, string>>
  /** Print progress lines and the final report (default true). */
  readonly print?: boolean
}

export interface MeterSummary {
  readonly meter: string
  readonly meterId: string
  readonly stripeMeterId: string
  readonly events: number
  /** Σ generated for every customer (mapped or not). */
  readonly expectedAll: string
  /** Σ generated for customers with a Stripe customer. */
  readonly expectedMapped: string
  /** Σ aggregated quantity over every ledger batch (our billable total). */
  readonly ledgerTotal: string
  /** Σ sent quantity of synced batches. */
  readonly ledgerSynced: string
  /** Σ the emulator received for the Stripe meter's event name. */
  readonly stripeReceived: string
  readonly batchesSynced: number
  /** Batches a run left pending (transient Stripe failure) that a later run synced. */
  readonly batchesRetried: number
  readonly lateDeltas: number
  readonly batchesSkipped: number
  readonly skippedQuantity: string
  readonly batchesFailed: number
  readonly batchesPending: number
}

export interface PhaseTiming {
  readonly phase: string
  readonly ms: number
  readonly detail: string
}

export interface SyncRunSummary {
  readonly trigger: "manual" | "schedule"
  readonly status: string
  readonly batchesCreated: number
  readonly batchesSynced: number
  readonly batchesSkipped: number
  readonly batchesFailed: number
  readonly stripeRequests: number | null
}

export interface DemoReport {
  readonly ok: boolean
  readonly failures: ReadonlyArray<string>
  readonly backend: string
  readonly dataDir: string | null
  readonly serviceUrl: string
  readonly emulatorUrl: string
  readonly window: { readonly start: string; readonly end: string }
  readonly customers: { readonly onboarded: number; readonly unmappedStripe: number; readonly withoutStripe: number }
  readonly webhooks: {
    readonly deliveries: number
    readonly non2xx: number
    readonly byStatus: Readonly<Record<string, number>>
    /** Deliveries of an event already delivered (the emulator's duplicate). */
    readonly duplicateDeliveries: number
    /** Every duplicated event has exactly one row in the webhook event log. */
    readonly duplicateRecordedOnce: boolean
    /** `flexprice_webhooks_total{outcome="duplicate"}` from /metrics (null: no /metrics). */
    readonly duplicatesAnswered: number | null
    readonly reorderedFinalEmail: string | null
    readonly reorderedExpectedEmail: string
  }
  readonly ingest: { readonly events: number; readonly late: number; readonly ms: number; readonly eventsPerSecond: number }
  readonly runs: ReadonlyArray<SyncRunSummary>
  readonly meters: ReadonlyArray<MeterSummary>
  readonly pairs: { readonly checked: number; readonly mismatched: number }
  readonly stripe: {
    readonly callsByPhase: Readonly<Record<string, number>>
    readonly callsByEndpoint: Readonly<Record<string, number>>
    readonly faultResponses: { readonly rateLimited: number; readonly serverErrors: number; readonly dropped: number }
    /** `flexprice_stripe_retries_total` during the first sync, from /metrics (null: no /metrics). */
    readonly clientRetries: number | null
    readonly meterEventsAccepted: number
    readonly streamErrors: number
  }
  /** the reconciliation endpoint's summary (read over HTTP) */
  readonly reconciliation: ReconciliationReport["summary"]
  readonly status: unknown
  readonly phases: ReadonlyArray<PhaseTiming>
  readonly wallMs: number
}

// ---------------------------------------------------------------------------------------------

const STRIPE_PATHS = ["/v2/billing/"]
const WEBHOOK_SECRET_BYTES = 24
const INGEST_CHUNK = 1000
const INGEST_IN_FLIGHT = 4
const NO_STRIPE_CUSTOMERS = 3
const UNMAPPED_STRIPE_CUSTOMERS = 3

interface HttpAnswer {
  readonly status: number
  readonly body: any
  readonly text: string
}

const pad = (n: number, width = 4) => String(n).padStart(width, "0")
const diffCounts = (after: Readonly<Record<string, number>>, before: Readonly<Record<string, number>>) => {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0)
    if (d !== 0) out[k] = d
  }
  return out
}

/** Σ of a Prometheus counter's samples (all label sets), optionally only those with a label. */
export const promSum = (text: string, name: string, labelFilter?: string): number => {
  let total = 0
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue
    if (!(line.startsWith(`${name}{`) || line.startsWith(`${name} `))) continue
    if (labelFilter !== undefined && !line.includes(labelFilter)) continue
    const value = Number(line.slice(line.lastIndexOf(" ") + 1))
    if (Number.isFinite(value)) total += value
  }
  return total
}

export const runDemo = (options: DemoOptions = {}): Effect.Effect<DemoReport, DemoFailed> =>
  Effect.scoped(
    Effect.gen(function* () {
      const started = yield* Clock.currentTimeMillis
      const nCustomers = Math.max(2, Math.floor(options.customers ?? 200))
      const nEvents = Math.max(1, Math.floor(options.events ?? 60_000))
      const nLate = Math.max(0, Math.floor(options.late ?? Math.max(10, Math.round(nEvents / 100))))
      const faults = options.faults ?? true
      const seed = options.seed ?? 20_240_601
      const printing = options.print ?? true
      const extraEnv = options.env ?? {}
      const lookup = (name: string): string => extraEnv[name] ?? process.env[name] ?? ""

      const phases: Array<PhaseTiming> = []
      let phaseStart = started
      const elapsed = (t: number) => `${formatSeconds(t - started).padStart(5)}s`
      const say = (line: string) => (printing ? Console.log(line) : Effect.void)
      const phaseDone = (phase: string, detail: string) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          phases.push({ phase, ms: now - phaseStart, detail })
          phaseStart = now
          yield* say(`[${elapsed(now)}] ${phase.padEnd(10)} ${detail}`)
        })
      const fail = (message: string) => new DemoFailed({ message })

      // ---------------------------------------------------------------- processes
      const postgresUrl = lookup("FLEXPRICE_DATABASE_URL")
      const clickhouseUrl = lookup("FLEXPRICE_CLICKHOUSE_URL")
      let dataDir: string | null = null
      if (postgresUrl === "") {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-demo-"))
        dataDir = dir
        yield* Effect.addFinalizer(() => (options.keep ? Effect.void : Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
      }
      const backend = [
        postgresUrl === "" ? `embedded PGlite (${dataDir})` : `PostgreSQL (${postgresUrl.replace(/\/\/([^:@/]+):([^@/]+)@/, "//$1:***@")})`,
        clickhouseUrl === "" ? "events in the relational database" : `events in ClickHouse (${clickhouseUrl})`
      ].join(", ")

      const stripeKey = `sk_test_demo_${randomBytes(12).toString("hex")}`
      const webhookSecret = `whsec_${randomBytes(WEBHOOK_SECRET_BYTES).toString("hex")}`
      const emulator: StripeEmulatorHandle = yield* makeStripeEmulator({ apiKey: Redacted.make(stripeKey), port: 0, rateLimits: "off" })

      const env: Record<string, string> = {
        FLEXPRICE_HTTP_ADDR: "127.0.0.1:0",
        // A fresh master key unless the environment has one — except for a directory kept with
        // --keep: there the embedded key file is created in it (as `serve` does), so it can be
        // served again.
        ...(!(dataDir !== null && options.keep) && lookup("FLEXPRICE_ENCRYPTION_KEYS") === ""
          ? { FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}` }
          : {}),
        FLEXPRICE_SCHEDULE_ENABLED: "true",
        FLEXPRICE_SCHEDULE_INTERVAL_SECONDS: "2",
        STRIPE_SYNC_GRACE_PERIOD_MINUTES: "1",
        // One process: in-flight ingests are tracked by IngestWatermark; the lag only covers
        // commits of other replicas, so a sync right after the last acknowledged ingest sees it all.
        FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
        STRIPE_API_BASE: emulator.url,
        STRIPE_METER_EVENTS_API_BASE: emulator.url,
        // The emulator is local and unthrottled; Stripe's own test-mode budget (25 r/s, client
        // default 20) would make the reconciliation's one-summary-call-per-pair the slowest phase.
        STRIPE_RATE_LIMIT_TEST_PER_SECOND: "200",
        ...(dataDir !== null ? { FLEXPRICE_DATA_DIR: dataDir } : {}),
        ...extraEnv
      }
      const provider = ConfigProvider.fromMap(new Map(Object.entries(env))).pipe(ConfigProvider.orElse(() => ConfigProvider.fromEnv()))
      const quiet = lookup("FLEXPRICE_LOG_LEVEL") === ""
      // The same Layers as `serve`, with the HTTP server's address exposed to find the port.
      const service = Layer.mergeAll(HttpApiLive.pipe(Layer.provideMerge(NodeServerLive)), SyncScheduler.layer).pipe(
        Layer.provideMerge(AppLive),
        Layer.provide(Telemetry.layer),
        Layer.provide(Layer.setConfigProvider(provider)),
        Layer.provide(quiet ? Logger.minimumLogLevel(LogLevel.Warning) : Layer.empty)
      )
      const context = yield* Layer.build(service).pipe(
        Effect.catchAllCause((cause) => Effect.fail(fail(`the service did not start: ${String(cause).split("\n")[0]}`)))
      )
      const address = Effect.runSync(Effect.provide(HttpServer.HttpServer, context)).address
      if (address._tag !== "TcpAddress") return yield* fail("the service is not listening on TCP")
      const baseUrl = `http://127.0.0.1:${address.port}`
      yield* say(`flexprice demo: ${nCustomers} customers, ${nEvents} events + ${nLate} late, faults ${faults ? "on" : "off"}; Stripe test-mode rate limit (25 req/s) lifted in the emulator`)
      yield* phaseDone("start", `service on ${baseUrl} (${backend}); Stripe emulator on ${emulator.url} (account ${emulator.accountId}); schedule every 2 s`)

      // ---------------------------------------------------------------- HTTP client
      let apiKey = ""
      const request = (method: string, p: string, body?: unknown): Effect.Effect<HttpAnswer, DemoFailed> =>
        Effect.tryPromise({
          try: async () => {
            const res = await fetch(`${baseUrl}${p}`, {
              method,
              headers: { "x-api-key": apiKey, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
              ...(body !== undefined ? { body: JSON.stringify(body) } : {})
            })
            const text = await res.text()
            let parsed: unknown = undefined
            try {
              parsed = text === "" ? undefined : JSON.parse(text)
            } catch {
              parsed = text
            }
            return { status: res.status, body: parsed, text }
          },
          catch: (e) => fail(`${method} ${p}: ${e instanceof Error ? e.message : String(e)}`)
        })
      const api = (method: string, p: string, body?: unknown, ok: ReadonlyArray<number> = [200, 201, 202]) =>
        Effect.flatMap(request(method, p, body), (res) =>
          ok.includes(res.status) ? Effect.succeed(res.body) : Effect.fail(fail(`${method} ${p} answered ${res.status}: ${res.text.slice(0, 300)}`))
        )
      // The Prometheus scrape endpoint; informative only (null when not served).
      const metrics = Effect.tryPromise({
        try: () => fetch(`${baseUrl}/metrics`).then(async (r) => (r.status === 200 ? await r.text() : null)),
        catch: (e) => fail(`GET /metrics: ${String(e)}`)
      })
      const metricSum = (name: string, label?: string) =>
        Effect.map(metrics, (text) => (text === null ? null : promSum(text, name, label)))
      const callsSnapshot = () => ({ ...emulator.callCounts() })
      const callsByPhase: Record<string, number> = {}
      let callsMark = 0
      const markCalls = (phase: string) => {
        const total = emulator.totalCalls()
        callsByPhase[phase] = (callsByPhase[phase] ?? 0) + (total - callsMark)
        callsMark = total
      }

      // ---------------------------------------------------------------- 1. tenant, config, meters
      const tenant = yield* Effect.provide(
        Effect.flatMap(TenantRepo, (r) => r.create(`demo-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`, "demo")),
        context
      ).pipe(Effect.mapError((e) => fail(`tenant create failed: ${String(e)}`)))
      apiKey = tenant.apiKey
      yield* api("PUT", "/v1/stripe/config", {
        api_key: stripeKey,
        webhook_secret: webhookSecret,
        transport: "stream",
        // The first sync is manual; the schedule takes over after it (step 4).
        sync_enabled: false
      })
      const meters: Array<{ name: string; meterId: string; stripeMeterId: string }> = []
      for (const spec of DEMO_METERS) {
        const created = yield* api("POST", "/v1/meters", {
          name: spec.name,
          event_name: spec.name,
          aggregation: { type: spec.aggregation, ...(spec.field ? { field: spec.field } : {}) }
        })
        const stripeMeter = yield* emulator
          .createMeter({
            display_name: spec.name,
            event_name: spec.name,
            default_aggregation: { formula: "sum" },
            customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
            value_settings: { event_payload_key: "value" }
          })
          .pipe(Effect.mapError((e) => fail(`emulator meter: ${e.message}`)))
        yield* api("PUT", `/v1/stripe/meter-mappings/${created.id}`, { provider_meter_id: stripeMeter.id })
        meters.push({ name: spec.name, meterId: created.id as string, stripeMeterId: stripeMeter.id })
      }
      const webhookPath = `/webhooks/stripe/${tenant.tenantId}/${tenant.environmentId}`
      emulator.setWebhookTarget({ url: `${baseUrl}${webhookPath}`, secret: Redacted.make(webhookSecret) })
      markCalls("setup")
      yield* phaseDone(
        "setup",
        `tenant ${tenant.tenantId}, Stripe config (key ${stripeKey.slice(0, 8)}…${stripeKey.slice(-4)}, webhook secret), meters ${meters
          .map((m) => `${m.name}→${m.stripeMeterId}`)
          .join(", ")}, webhook → ${webhookPath}`
      )

      // ---------------------------------------------------------------- 2. customers via webhooks
      const externalIds = Array.from({ length: nCustomers }, (_, i) => `customer-${pad(i + 1)}`)
      const stripeIdByExternal = new Map<string, string>()
      const emulatorError = (e: { message: string }) => fail(`emulator: ${e.message}`)
      const createStripeCustomer = (externalId: string) =>
        Effect.map(
          emulator
            .createCustomer({ name: `Customer ${externalId.slice(-4)}`, email: `${externalId}@example.com`, metadata: { external_id: externalId } })
            .pipe(Effect.mapError(emulatorError)),
          (c) => {
            stripeIdByExternal.set(externalId, c.id)
            return c
          }
        )
      // customer.updated delivered before its customer.created: the end state must be the update's.
      emulator.deliveries.hold()
      const reordered = yield* createStripeCustomer(externalIds[0]!)
      const reorderedEmail = `billing+${externalIds[0]}@example.com`
      yield* emulator.updateCustomer(reordered.id, { email: reorderedEmail }).pipe(Effect.mapError(emulatorError))
      yield* emulator.deliveries.release("reverse")
      // one event delivered twice
      emulator.deliveries.duplicateNext(1, 1)
      yield* createStripeCustomer(externalIds[1]!)
      for (let i = 2; i < nCustomers; i++) {
        yield* createStripeCustomer(externalIds[i]!)
        // Stripe sends webhooks concurrently; a few at a time keeps each one's latency readable.
        if (i % 5 === 0) yield* emulator.deliveries.flush
      }
      for (let i = 1; i <= UNMAPPED_STRIPE_CUSTOMERS; i++)
        yield* emulator.createCustomer({ name: `Walk-in ${i}`, email: `walk-in-${i}@example.com` }).pipe(Effect.mapError(emulatorError))
      yield* emulator.deliveries.flush
      // Customers we bill but who have no Stripe customer yet: their usage is held, not sent.
      const noStripeIds = Array.from({ length: NO_STRIPE_CUSTOMERS }, (_, i) => `no-stripe-${i + 1}`)
      for (const id of noStripeIds) yield* api("POST", "/v1/customers", { external_id: id, name: `No Stripe ${id.slice(-1)}` })

      const deliveries = emulator.deliveries.log()
      const byStatus: Record<string, number> = {}
      for (const d of deliveries) byStatus[String(d.status ?? "error")] = (byStatus[String(d.status ?? "error")] ?? 0) + 1
      const latencies = deliveries.map((d) => d.durationMs).sort((a, b) => a - b)
      const webhookP50 = latencies[Math.floor(latencies.length / 2)] ?? 0
      const webhookMax = latencies[latencies.length - 1] ?? 0
      const non2xx = deliveries.filter((d) => d.status === null || d.status < 200 || d.status >= 300).length
      // every customer the webhooks should have created is there (paging the customers API)
      const countCustomers = Effect.gen(function* () {
        let cursor: string | null = null
        let n = 0
        do {
          const page: { customers: Array<unknown>; next_cursor: string | null } = yield* api(
            "GET",
            `/v1/customers?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
          )
          n += page.customers.length
          cursor = page.next_cursor
        } while (cursor !== null)
        return n
      })
      const wantCustomers = nCustomers + NO_STRIPE_CUSTOMERS
      let haveCustomers = yield* countCustomers
      for (let i = 0; i < 50 && haveCustomers < wantCustomers; i++) {
        yield* Effect.sleep(Duration.millis(200))
        haveCustomers = yield* countCustomers
      }
      if (haveCustomers !== wantCustomers)
        return yield* fail(`webhooks onboarded ${haveCustomers - NO_STRIPE_CUSTOMERS} customers, expected ${nCustomers} (deliveries: ${JSON.stringify(byStatus)})`)
      const webhookEvents: { events: Array<{ status: string; stripe_event_id: string }> } = yield* api(
        "GET",
        "/v1/stripe/webhook-events?limit=1000"
      )
      const eventStatus: Record<string, number> = {}
      for (const e of webhookEvents.events) eventStatus[e.status] = (eventStatus[e.status] ?? 0) + 1
      const duplicated = [...new Set(deliveries.filter((d) => d.attempt > 1).map((d) => d.eventId))]
      const duplicateDeliveries = deliveries.filter((d) => d.attempt > 1).length
      const duplicateRecordedOnce =
        duplicated.length > 0 && duplicated.every((id) => webhookEvents.events.filter((e) => e.stripe_event_id === id).length === 1)
      const duplicatesAnswered = yield* metricSum("flexprice_webhooks_total", 'outcome="duplicate"')
      const reorderedView: { customers: Array<{ email: string | null }> } = yield* api(
        "GET",
        `/v1/customers?external_id=${encodeURIComponent(externalIds[0]!)}`
      )
      const reorderedFinalEmail = reorderedView.customers[0]?.email ?? null
      markCalls("customers")
      yield* phaseDone(
        "customers",
        `${nCustomers} Stripe customers onboarded by signed webhooks (${deliveries.length} deliveries: ${Object.entries(byStatus)
          .map(([s, n]) => `${n}×${s}`)
          .join(", ")}, latency p50 ${webhookP50} ms, max ${webhookMax} ms); webhook log ${Object.entries(eventStatus)
          .map(([s, n]) => `${s} ${n}`)
          .join(", ")}; ${duplicateDeliveries} duplicate delivery ${duplicateRecordedOnce ? "logged once" : "NOT logged once"}${duplicatesAnswered === null ? "" : ` (answered "duplicate" ${duplicatesAnswered}×)`}; updated-before-created → email ${reorderedFinalEmail}; ${NO_STRIPE_CUSTOMERS} customers without Stripe`
      )

      // ---------------------------------------------------------------- 3. one hour of usage
      const now = yield* Clock.currentTimeMillis
      const hourStart = Math.floor(now / HOUR_MS) * HOUR_MS - 2 * HOUR_MS
      const windowStart = new Date(hourStart).toISOString()
      const windowEnd = new Date(hourStart + HOUR_MS).toISOString()
      const usageCustomers = [...externalIds, ...noStripeIds]
      const usage = generateUsage({ seed, count: nEvents, customers: usageCustomers, hourStart, idPrefix: "demo" })

      const ingest = (events: ReadonlyArray<UsageEvent>) =>
        Effect.gen(function* () {
          const chunks: Array<ReadonlyArray<UsageEvent>> = []
          for (let i = 0; i < events.length; i += INGEST_CHUNK) chunks.push(events.slice(i, i + INGEST_CHUNK))
          const results = yield* Effect.forEach(
            chunks,
            (chunk) =>
              Effect.flatMap(api("POST", "/v1/events/bulk", { events: chunk }), (r: { accepted: number; duplicates: number; rejected: Array<unknown> }) =>
                r.rejected.length > 0 || r.accepted !== chunk.length
                  ? Effect.fail(fail(`bulk ingest: accepted ${r.accepted}/${chunk.length}, rejected ${JSON.stringify(r.rejected.slice(0, 3))}`))
                  : Effect.succeed(r.accepted)
              ),
            { concurrency: INGEST_IN_FLIGHT }
          )
          return results.reduce((a, b) => a + b, 0)
        })
      const ingestStart = yield* Clock.currentTimeMillis
      const accepted = yield* ingest(usage.events)
      const ingestMs = (yield* Clock.currentTimeMillis) - ingestStart
      const eventsPerSecond = Math.round(accepted / Math.max(0.001, ingestMs / 1000))
      yield* phaseDone(
        "ingest",
        `${accepted} events for ${windowStart.slice(0, 16)}Z–${windowEnd.slice(11, 16)}Z via POST /v1/events/bulk (${INGEST_CHUNK}/request, ${INGEST_IN_FLIGHT} in flight): ${eventsPerSecond} events/s`
      )

      // ---------------------------------------------------------------- 4a. manual sync under faults
      const statusBefore = { ...emulator.statusCounts() }
      const retriesBefore = yield* metricSum("flexprice_stripe_retries_total")
      if (faults)
        yield* emulator.setFaults({
          // Seeded: the k-th meter event request gets the k-th draw, so every run sees the same
          // faults (seed 12 answers the 1st request 503, the 3rd 429, the 6th 429, ...).
          rateLimitFraction: 0.2,
          serverErrorFraction: 0.2,
          serverErrorStatus: 503,
          seed: 12,
          paths: STRIPE_PATHS
        })
      const runs: Array<SyncRunSummary> = []
      const retriedBatchIds = new Set<string>()
      const listBatches = Effect.gen(function* () {
        const all: Array<BatchView> = []
        let cursor: string | null = null
        do {
          const page: { batches: Array<BatchView>; next_cursor: string | null } = yield* api(
            "GET",
            `/v1/stripe/sync/batches?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
          )
          all.push(...page.batches)
          cursor = page.next_cursor
        } while (cursor !== null)
        return all
      })
      for (let attempt = 1; ; attempt++) {
        const res = yield* request("POST", "/v1/stripe/sync/manual", { window_start: windowStart, window_end: windowEnd })
        if (res.status === 409 && attempt < 10) {
          yield* Effect.sleep(Duration.seconds(1))
          continue
        }
        if (res.status !== 200) return yield* fail(`POST /v1/stripe/sync/manual answered ${res.status}: ${res.text.slice(0, 300)}`)
        const r = res.body as ManualSyncAnswer
        runs.push({
          trigger: "manual",
          status: r.status,
          batchesCreated: r.batches_created,
          batchesSynced: r.batches_synced,
          batchesSkipped: r.batches_skipped,
          batchesFailed: r.batches_failed,
          stripeRequests: r.stripe_requests
        })
        if (r.status === "completed") break
        // A run stops pushing on a transient failure that outlived the client's retries; the
        // batches stay pending and the next run sends them with the same identifiers.
        for (const b of yield* listBatches) if (b.sync_status === "pending" && b.error_code !== null) retriedBatchIds.add(b.id)
        if (attempt >= 10) return yield* fail(`manual sync still ${r.status} after ${attempt} runs: ${r.error}`)
        yield* say(`           run ${attempt}: ${r.status} (${r.error}); ${r.batches_synced} synced — running again`)
      }
      if (faults) emulator.resetFaults()
      const statusAfter = { ...emulator.statusCounts() }
      const faultDiff = diffCounts(statusAfter, statusBefore)
      const retriesAfter = yield* metricSum("flexprice_stripe_retries_total")
      const clientRetries = retriesAfter === null || retriesBefore === null ? null : retriesAfter - retriesBefore
      const rateLimited = faultDiff["429"] ?? 0
      const serverErrors = Object.entries(faultDiff)
        .filter(([s]) => Number(s) >= 500)
        .reduce((a, [, n]) => a + n, 0)
      const dropped = faultDiff["0"] ?? 0
      markCalls("sync (manual)")
      const first = runs[0]!
      yield* phaseDone(
        "sync",
        `POST /v1/stripe/sync/manual ${windowStart.slice(11, 16)}–${windowEnd.slice(11, 16)}Z: ${runs
          .map((r) => r.status)
          .join(" → ")}; ${first.batchesCreated} batches created, ${runs.reduce((a, r) => a + r.batchesSynced, 0)} synced, ${first.batchesSkipped} skipped; Stripe answered ${rateLimited}×429, ${serverErrors}×5xx${dropped ? `, ${dropped} dropped` : ""}${clientRetries === null ? ", retried by the client" : ` → ${clientRetries} client retries`}`
      )

      // ---------------------------------------------------------------- 4b. late events, schedule
      const late = generateUsage({ seed: seed + 1, count: nLate, customers: usageCustomers, hourStart, idPrefix: "late" })
      const lateAccepted = nLate > 0 ? yield* ingest(late.events) : 0
      const expected: Totals = usage.totals.merge(late.totals)
      const scheduleFrom = new Date(yield* Clock.currentTimeMillis).toISOString()
      yield* api("PUT", "/v1/stripe/config", { sync_enabled: true })
      const ledgerComplete = (batches: ReadonlyArray<BatchView>) =>
        meters.every((m) =>
          Decimal.equals(
            Decimal.sum(batches.filter((b) => b.meter_id === m.meterId).map((b) => b.aggregated_quantity)),
            expected.meterTotal(m.name)
          )
        ) && batches.every((b) => b.sync_status !== "pending" && b.sync_status !== "sending")
      let scheduleRuns: ReadonlyArray<SyncRunView> = []
      for (let i = 0; ; i++) {
        const status: { last_run: SyncRunView | null; counts: Record<string, number> } = yield* api("GET", "/v1/stripe/sync/status")
        const last = status.last_run
        if (last && last.trigger === "schedule" && last.finished_at !== null && last.started_at >= scheduleFrom) {
          if (ledgerComplete(yield* listBatches)) {
            scheduleRuns = [last]
            break
          }
        }
        if (i >= 120) return yield* fail(`the schedule did not sync the ${lateAccepted} late events within 60 s (last run: ${JSON.stringify(last)})`)
        yield* Effect.sleep(Duration.millis(500))
      }
      for (const r of scheduleRuns)
        runs.push({
          trigger: "schedule",
          status: r.status,
          batchesCreated: r.batches_created,
          batchesSynced: r.batches_synced,
          batchesSkipped: r.batches_skipped,
          batchesFailed: r.batches_failed,
          stripeRequests: null
        })
      markCalls("sync (schedule)")
      const lastRun = scheduleRuns[0]!
      yield* phaseDone(
        "late",
        `${lateAccepted} late events for the same hour, then sync_enabled=true: the schedule's run ${lastRun.status}, ${lastRun.batches_created} delta batches created, ${lastRun.batches_synced} synced`
      )

      // ---------------------------------------------------------------- 5. reconciliation
      // Stripe's summaries lag accepted events (meter events are processed asynchronously,
      // https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api; the
      // emulator models the delay): ask again until every row matches or 30 s have passed.
      const reconcileOnce = api(
        "GET",
        `/v1/stripe/sync/reconciliation?from=${encodeURIComponent(windowStart)}&to=${encodeURIComponent(windowEnd)}`
      ).pipe(Effect.map((b) => b as { summary: ReconciliationSummary }))
      let reconciliation = yield* reconcileOnce
      for (let i = 0; i < 60 && (reconciliation.summary.rows_with_drift > 0 || reconciliation.summary.unavailable_pairs > 0); i++) {
        yield* Effect.sleep(Duration.millis(500))
        reconciliation = yield* reconcileOnce
      }
      markCalls("reconciliation")
      const rs = reconciliation.summary
      yield* phaseDone(
        "reconcile",
        `GET /v1/stripe/sync/reconciliation: ${rs.pairs} (customer, meter) pairs vs Stripe's meter event summaries, drift ${rs.drift_total}`
      )

      // ---------------------------------------------------------------- report
      const batches = yield* listBatches
      const status = yield* api("GET", "/v1/stripe/sync/status")
      const mappedSet = new Set(externalIds)
      const noStripeSet = new Set(noStripeIds)
      const stripeTotals = emulator.state.totals()
      const meterSummaries: Array<MeterSummary> = meters.map((m) => {
        const mine = batches.filter((b) => b.meter_id === m.meterId)
        const synced = mine.filter((b) => b.sync_status === "synced")
        const skipped = mine.filter((b) => b.sync_status === "skipped")
        return {
          meter: m.name,
          meterId: m.meterId,
          stripeMeterId: m.stripeMeterId,
          events: expected.events(m.name),
          expectedAll: expected.meterTotal(m.name),
          expectedMapped: expected.meterTotal(m.name, mappedSet),
          ledgerTotal: Decimal.sum(mine.map((b) => b.aggregated_quantity)),
          ledgerSynced: Decimal.sum(synced.map((b) => b.sent_quantity ?? "0")),
          stripeReceived: Decimal.sum(stripeTotals.filter((t) => t.eventName === m.name).map((t) => t.sum)),
          batchesSynced: synced.length,
          batchesRetried: mine.filter((b) => retriedBatchIds.has(b.id)).length,
          lateDeltas: mine.filter((b) => b.sequence > 1).length,
          batchesSkipped: skipped.length,
          skippedQuantity: Decimal.sum(skipped.map((b) => b.aggregated_quantity)),
          batchesFailed: mine.filter((b) => b.sync_status === "failed").length,
          batchesPending: mine.filter((b) => b.sync_status === "pending" || b.sync_status === "sending").length
        }
      })

      // ---------------------------------------------------------------- checks
      const failures: Array<string> = []
      let pairsChecked = 0
      let pairsMismatched = 0
      for (const m of meters) {
        for (const externalId of externalIds) {
          const want = expected.get(externalId, m.name)
          const got = emulator.total(stripeIdByExternal.get(externalId)!, m.name).sum
          pairsChecked++
          if (!Decimal.equals(want, got)) {
            pairsMismatched++
            if (pairsMismatched <= 5) failures.push(`${externalId} ${m.name}: generated ${want}, Stripe received ${got}`)
          }
        }
      }
      for (const s of meterSummaries) {
        if (!Decimal.equals(s.ledgerTotal, s.expectedAll)) failures.push(`${s.meter}: our ledger has ${s.ledgerTotal}, the generator sent ${s.expectedAll}`)
        if (!Decimal.equals(s.ledgerSynced, s.expectedMapped))
          failures.push(`${s.meter}: our ledger synced ${s.ledgerSynced}, the generator sent ${s.expectedMapped} for mapped customers`)
        if (!Decimal.equals(s.stripeReceived, s.expectedMapped))
          failures.push(`${s.meter}: Stripe received ${s.stripeReceived}, the generator sent ${s.expectedMapped} for mapped customers`)
        const unmappedWant = expected.meterTotal(s.meter, noStripeSet)
        if (!Decimal.equals(s.skippedQuantity, unmappedWant))
          failures.push(`${s.meter}: ${s.skippedQuantity} held as skipped, ${unmappedWant} generated for customers without Stripe`)
        if (s.batchesFailed > 0 || s.batchesPending > 0) failures.push(`${s.meter}: ${s.batchesFailed} failed and ${s.batchesPending} pending batches`)
      }
      const unexpectedSkips = batches.filter((b) => b.sync_status === "skipped" && b.skip_reason !== "no_mapping")
      if (unexpectedSkips.length > 0) failures.push(`${unexpectedSkips.length} batches skipped for another reason than no_mapping (${unexpectedSkips[0]!.skip_reason})`)
      // rows_with_drift counts rows beyond double precision (Stripe sums as doubles, see
      // SummaryTolerance.ts); drift_total may carry that rounding and is shown, not required 0.
      if (rs.rows_with_drift > 0 || rs.unavailable_pairs > 0)
        failures.push(`reconciliation: drift ${rs.drift_total} over ${rs.rows_with_drift} rows, ${rs.unavailable_pairs} pairs not checked`)
      if (emulator.state.streamErrors().length > 0) failures.push(`Stripe reported ${emulator.state.streamErrors().length} invalid meter events`)
      if (non2xx > 0) failures.push(`${non2xx} webhook deliveries were not answered 2xx`)
      if (reorderedFinalEmail !== reorderedEmail)
        failures.push(`updated-before-created: the customer's email is ${reorderedFinalEmail}, expected the update's ${reorderedEmail}`)
      if (!duplicateRecordedOnce) failures.push("the duplicated webhook delivery is not recorded exactly once in the webhook event log")
      if (emulator.state.meterEvents().length !== batches.filter((b) => b.sync_status === "synced").length)
        failures.push(`Stripe accepted ${emulator.state.meterEvents().length} meter events for ${batches.filter((b) => b.sync_status === "synced").length} synced batches`)

      const wallMs = (yield* Clock.currentTimeMillis) - started
      const report: DemoReport = {
        ok: failures.length === 0,
        failures,
        backend,
        dataDir,
        serviceUrl: baseUrl,
        emulatorUrl: emulator.url,
        window: { start: windowStart, end: windowEnd },
        customers: { onboarded: nCustomers, unmappedStripe: UNMAPPED_STRIPE_CUSTOMERS, withoutStripe: NO_STRIPE_CUSTOMERS },
        webhooks: {
          deliveries: deliveries.length,
          non2xx,
          byStatus: eventStatus,
          duplicateDeliveries,
          duplicateRecordedOnce,
          duplicatesAnswered,
          reorderedFinalEmail,
          reorderedExpectedEmail: reorderedEmail
        },
        ingest: { events: accepted, late: lateAccepted, ms: ingestMs, eventsPerSecond },
        runs,
        meters: meterSummaries,
        pairs: { checked: pairsChecked, mismatched: pairsMismatched },
        stripe: {
          callsByPhase,
          callsByEndpoint: callsSnapshot(),
          faultResponses: { rateLimited, serverErrors, dropped },
          clientRetries,
          meterEventsAccepted: emulator.state.meterEvents().length,
          streamErrors: emulator.state.streamErrors().length
        },
        reconciliation: {
          pairs: rs.pairs,
          rows: rs.rows,
          rowsWithDrift: rs.rows_with_drift,
          syncedTotal: rs.synced_total,
          stripeTotal: rs.stripe_total,
          driftTotal: rs.drift_total,
          unavailablePairs: rs.unavailable_pairs
        },
        status,
        phases,
        wallMs
      }
      if (printing) yield* Console.log(formatReport(report, { keep: options.keep ?? false }))
      if (printing && options.keep && dataDir !== null)
        // Like `flexprice tenant create`, the kept environment's key is printed once, on stdout.
        yield* Console.log(
          `Explore the kept data: FLEXPRICE_DATA_DIR=${dataDir} npx tsx src/bin/flexprice.ts serve, then curl -H 'x-api-key: ${tenant.apiKey}' http://127.0.0.1:8080/v1/stripe/sync/batches (the emulator is gone: Stripe calls will fail)`
        )
      return report
    })
  )

interface BatchView {
  readonly id: string
  readonly meter_id: string
  readonly customer_id: string
  readonly sequence: number
  readonly aggregated_quantity: string
  readonly sent_quantity: string | null
  readonly sync_status: "pending" | "sending" | "synced" | "failed" | "skipped"
  readonly skip_reason: string | null
  readonly error_code: string | null
}

interface ManualSyncAnswer {
  readonly status: string
  readonly batches_created: number
  readonly batches_synced: number
  readonly batches_failed: number
  readonly batches_skipped: number
  readonly stripe_requests: number
  readonly error: string | null
}

interface SyncRunView {
  readonly trigger: string
  readonly status: string
  readonly started_at: string
  readonly finished_at: string | null
  readonly batches_created: number
  readonly batches_synced: number
  readonly batches_failed: number
  readonly batches_skipped: number
}

interface ReconciliationSummary {
  readonly pairs: number
  readonly rows: number
  readonly rows_with_drift: number
  readonly synced_total: string
  readonly stripe_total: string
  readonly drift_total: string
  readonly unavailable_pairs: number
}

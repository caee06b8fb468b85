/**
 * The alert rules, live (issue #18 item 4): Debian's `prometheus` scrapes a running service
 * (startTestApp on a loopback port) every second and evaluates deploy/prometheus/alerts.yml every
 * second; a Stripe outage and an auth failure are induced through the emulator's control plane,
 * and the matching alerts must go pending/firing in Prometheus' own `/api/v1/alerts`, then clear
 * once Stripe recovers. promtool's unit tests (alerts.test.yml) check the rules on made-up series;
 * this checks that the service really exports the series, names and labels the rules read.
 *
 * The rules Prometheus loads are generated from the real file (`compressRules`): alert names,
 * metric names, label matchers, aggregations and thresholds are unchanged, and only time is
 * compressed 60× — every `for:`, every range selector (`[15m]` → `[15s]`, `[1h]` → `[1m]`) and
 * every `offset`.
 * `for:` alone would not do: StripeAuthenticationFailures is `increase(...[15m]) > 0`, which stays
 * true for fifteen minutes after the last failure, so "recovery clears it" needs the range
 * compressed too. Thresholds stay in real units, so gauge alerts (oldest unsynced window > 3900 s,
 * circuit state == 2) mean exactly what they mean in production.
 *
 * Without the binary the test fails under CI (.ci/run installs the `prometheus` package) and
 * otherwise is one explanatory test, like the other backend suites.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { breakerAdmits, hoursAgo, startSyncHarness, type SyncHarness } from "../sync/support.js"
import { storeStripeConfig } from "../support/stripe-config.js"

const RULES = fileURLToPath(new URL("../../deploy/prometheus/alerts.yml", import.meta.url))
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

const compressDuration = (n: number, unit: string): string =>
  unit === "h" ? `${n}m` : unit === "m" ? `${n}s` : unit === "s" ? `${Math.max(1, Math.round((n * 1000) / 60))}ms` : `${n}${unit}`

/** alerts.yml with every `for:`, range selector and offset 60× shorter; nothing else changes. */
export const compressRules = (text: string): string =>
  text
    .replace(/^(\s*for:\s*)(\d+)([smh])\s*$/gm, (_, lead: string, n: string, u: string) => `${lead}${compressDuration(Number(n), u)}`)
    .replace(/\[(\d+)([smh])\]/g, (_, n: string, u: string) => `[${compressDuration(Number(n), u)}]`)
    .replace(/\boffset (\d+)([smh])\b/g, (_, n: string, u: string) => `offset ${compressDuration(Number(n), u)}`)

const prometheusBinary = (): string | undefined => {
  const r = spawnSync("prometheus", ["--version"], { encoding: "utf8" })
  return r.status === 0 ? "prometheus" : undefined
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

/** One series of an instant query's vector result: labels and [time, value]. */
interface PromSample {
  readonly metric: Record<string, string>
  readonly value: readonly [number, string]
}

interface PromAlert {
  readonly labels: Record<string, string>
  readonly state: "pending" | "firing"
}

describe("alert rules under a live Prometheus", () => {
  it("compressRules shortens durations only", () => {
    const real = fs.readFileSync(RULES, "utf8")
    const compressed = compressRules(real)
    expect(compressed).toContain("increase(flexprice_stripe_calls_total{outcome=\"auth_failed\"}[15s])")
    expect(compressed).toContain("offset 15s")
    expect(compressed).not.toMatch(/for:\s*\d+m/)
    // everything but the durations is byte-for-byte the real file
    const strip = (s: string) => s.replace(/\[\d+m?s?h?\]/g, "[]").replace(/for:\s*\S+/g, "for:").replace(/offset \d+m?s?h?/g, "offset")
    expect(strip(compressed)).toBe(strip(real))
  })

  const binary = prometheusBinary()
  if (binary === undefined) {
    it("prometheus binary missing: install Debian's `prometheus` package to run the live-alert test", () => {
      const ci = process.env["CI"]
      expect(ci === undefined || ci === "" || ci === "false", "prometheus is not on PATH but CI is set: .ci/run must install it").toBe(true)
    })
    return
  }

  let h: SyncHarness
  let prom: ChildProcess | undefined
  let promUrl = ""
  let dir = ""
  let promLog = ""

  beforeAll(async () => {
    // A breaker cooldown of a few seconds: long enough that the open state is what each scrape
    // sees during the outage, short enough that recovery closes it within the test.
    h = await startSyncHarness({ env: { STRIPE_BREAKER_COOLDOWN_SECONDS: "2", STRIPE_BREAKER_CONSECUTIVE_FAILURES: "2" } })
    await h.configure({ transport: "stream" })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-prom-"))
    fs.writeFileSync(path.join(dir, "alerts.yml"), compressRules(fs.readFileSync(RULES, "utf8")))
    const target = new URL(h.app.baseUrl).host
    fs.writeFileSync(
      path.join(dir, "prometheus.yml"),
      [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "rule_files:",
        `  - ${path.join(dir, "alerts.yml")}`,
        "scrape_configs:",
        "  - job_name: flexprice",
        "    metrics_path: /metrics",
        "    static_configs:",
        `      - targets: ["${target}"]`,
        ""
      ].join("\n")
    )
    const port = await freePort()
    promUrl = `http://127.0.0.1:${port}`
    prom = spawn(
      binary,
      [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn"
      ],
      { stdio: ["ignore", "ignore", "pipe"] }
    )
    prom.stderr?.on("data", (d: Buffer) => {
      promLog = (promLog + d.toString()).slice(-4000)
    })
    // ready, and the service scraped at least once
    await until("prometheus scraping the service", async () => {
      const r = await query("up")
      return r.some((s) => s.value[1] === "1")
    })
  })

  afterAll(async () => {
    if (prom && prom.exitCode === null) {
      prom.kill("SIGTERM")
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          prom?.kill("SIGKILL")
          r()
        }, 5000)
        prom?.once("exit", () => {
          clearTimeout(t)
          r()
        })
      })
    }
    await h?.dispose()
    if (dir) fs.rmSync(dir, { recursive: true, force: true })
  })

  /** Prometheus's HTTP API answer, its `data` as the endpoint documents it. */
  const api = async <D>(p: string): Promise<D> => {
    const res = await fetch(`${promUrl}${p}`)
    const body = (await res.json()) as { status: string; data: D }
    if (body.status !== "success") throw new Error(`prometheus ${p}: ${JSON.stringify(body)}`)
    return body.data
  }
  const query = async (q: string) => (await api<{ result: ReadonlyArray<PromSample> }>(`/api/v1/query?query=${encodeURIComponent(q)}`)).result
  const alerts = async (): Promise<ReadonlyArray<PromAlert>> => (await api<{ alerts: ReadonlyArray<PromAlert> }>("/api/v1/alerts")).alerts
  const stateOf = async (name: string) => (await alerts()).filter((a) => a.labels["alertname"] === name).map((a) => a.state)

  /** Polls `check` (running `between` each round) until true; fails with Prometheus' view. */
  const until = async (what: string, check: () => Promise<boolean>, between?: () => Promise<unknown>, timeoutMs = 25_000) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (prom?.exitCode !== null && prom?.exitCode !== undefined) throw new Error(`prometheus exited: ${promLog}`)
      if (await check().catch(() => false)) return
      if (Date.now() > deadline) {
        const seen = await alerts().catch(() => [])
        throw new Error(`timed out waiting for ${what}; alerts: ${JSON.stringify(seen)}; prometheus: ${promLog}`)
      }
      await between?.()
      await sleep(500)
    }
  }

  const ingestOldUsage = async (prefix: string, hours: number) => {
    const m = await h.meter(`${prefix}_calls`, { aggregation: "COUNT" })
    const c = await h.customer(`${prefix}_c`)
    await h.ingest(
      Array.from({ length: 5 }, (_, i) => ({
        event_id: `${prefix}_e${i}`,
        event_name: m.eventName,
        external_customer_id: `${prefix}_c`,
        // closed hours ago: older than the 65-minute promise the OldestUnsyncedWindowTooOld rule watches
        timestamp: hoursAgo(hours, i)
      }))
    )
    /** all five events are in Stripe */
    return async () => h.stripeTotal(c.stripeId!, m.stripeEventName) === "5"
  }

  const control = (method: string, p: string, body?: unknown) =>
    fetch(`${h.emulator.url}${p}`, {
      method,
      headers: { "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    }).then(async (r) => {
      if (r.status !== 200) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`)
      return r.json() as Promise<unknown>
    })

  const syncQuietly = () => h.sync().catch(() => undefined)
  const pendingOrFiring = (name: string) => async () => (await stateOf(name)).length > 0
  const firing = (name: string) => async () => (await stateOf(name)).includes("firing")
  const cleared = (name: string) => async () => (await stateOf(name)).length === 0

  it("a Stripe outage opens the circuit and leaves usage unsynced: alerts fire, then clear on recovery", async () => {
    const delivered = await ingestOldUsage("outage", 2)
    // https://docs.stripe.com/error-low-level#server-errors — the emulator answers 503 while out
    await control("POST", "/_emulator/faults", { outage_seconds: 600 })
    await until("StripeCircuitOpen pending/firing", pendingOrFiring("StripeCircuitOpen"), syncQuietly)
    await until("OldestUnsyncedWindowTooOld firing", firing("OldestUnsyncedWindowTooOld"), syncQuietly)
    expect(h.emulator.state.meterEvents()).toHaveLength(0)

    await control("DELETE", "/_emulator/faults")
    await until("the outage's usage synced", delivered, async () => {
      await breakerAdmits(h) // the breaker's cooldown has passed: the run probes Stripe
      await syncQuietly()
    })
    await until("StripeCircuitOpen cleared", cleared("StripeCircuitOpen"))
    await until("OldestUnsyncedWindowTooOld cleared", cleared("OldestUnsyncedWindowTooOld"))
  })

  it("a rolled (expired) API key: StripeAuthenticationFailures fires, and clears once the new key is configured", async () => {
    // https://docs.stripe.com/keys#rolling-keys — the old key answers 401 api_key_expired
    const rolled = (await control("POST", "/_emulator/keys/roll", { expire_after_seconds: 0 })) as { api_key: string }
    const delivered = await ingestOldUsage("auth", 3)
    await until("StripeAuthenticationFailures firing", firing("StripeAuthenticationFailures"), syncQuietly)
    const firingAlert = (await alerts()).find((a) => a.labels["alertname"] === "StripeAuthenticationFailures")
    expect(firingAlert?.labels["severity"]).toBe("critical")
    expect(await delivered()).toBe(false)

    // the operator stores the new key (what PUT /v1/stripe/config does)
    await h.asTenant(
      storeStripeConfig({ apiKey: rolled.api_key, accountId: h.emulator.accountId })
    )
    await until("the usage synced with the new key", delivered, async () => {
      await breakerAdmits(h)
      await syncQuietly()
    })
    await until("StripeAuthenticationFailures cleared", cleared("StripeAuthenticationFailures"), undefined, 30_000)
  })
})

/**
 * The Stripe emulator a benchmark pushes to, either in this process (sharing its event loop with
 * the service under test, and with PGlite's WebAssembly engine) or as a child process
 * (`flexprice stripe-emulator --port 0`) on loopback — closer to production, where Stripe is
 * remote and its work is not on the service's CPU budget. Setup and checks go through the same
 * calls either way: the in-process handle directly, the child over HTTP (Stripe API + the
 * `/_emulator/*` control plane).
 */
import { Effect, Exit, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { encodeForm, makeStripeEmulator } from "../src/stripe-emulator/index.js"

export type EmulatorMode = "child" | "same-process"

export interface EmulatorTarget {
  readonly mode: EmulatorMode
  readonly url: string
  readonly accountId: string
  readonly createMeter: (p: { display_name: string; event_name: string }) => Promise<{ id: string }>
  /** n empty customers; their ids in creation order */
  readonly createCustomers: (n: number) => Promise<Array<string>>
  /** Stripe API calls so far (all endpoints) and per endpoint */
  readonly calls: () => Promise<{ total: number; byEndpoint: Record<string, number> }>
  /** `${customer}\u0000${event_name}` → accepted sum */
  readonly totals: () => Promise<Map<string, string>>
  readonly close: () => Promise<void>
}

const inProcess = async (apiKey: string): Promise<EmulatorTarget> => {
  const scope = Effect.runSync(Scope.make())
  const emu = await Effect.runPromise(makeStripeEmulator({ apiKey, now: () => Date.now(), rateLimits: "off" /* bench: test-mode 25 req/s lifted */ }).pipe(Scope.extend(scope)))
  return {
    mode: "same-process",
    url: emu.url,
    accountId: emu.accountId,
    createMeter: (p) => Effect.runPromise(emu.createMeter({ ...p, default_aggregation: { formula: "sum" } })),
    createCustomers: async (n) => {
      const ids: Array<string> = []
      for (let i = 0; i < n; i++) ids.push((await Effect.runPromise(emu.createCustomer({}))).id)
      return ids
    },
    calls: async () => ({ total: emu.totalCalls(), byEndpoint: emu.callCounts() }),
    totals: async () => new Map([...emu.totals()].map(([k, v]) => [k, v.sum])),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const child = async (apiKey: string): Promise<EmulatorTarget> => {
  const proc: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", "src/bin/flexprice.ts", "stripe-emulator", "--port", "0", "--api-key", apiKey],
    { stdio: ["ignore", "ignore", "pipe"] }
  )
  // The CLI logs one JSON line to stderr once listening: the URL and the account id.
  const { url, accountId } = await new Promise<{ url: string; accountId: string }>((resolve, reject) => {
    let buffered = ""
    const onData = (b: Buffer) => {
      buffered += b.toString()
      const m = /listening on (http:\/\/[^\s"]+)".*"account":"([^"]+)"/.exec(buffered)
      if (m) {
        proc.stderr!.off("data", onData)
        proc.stderr!.resume() // keep draining so later logs never block the child
        resolve({ url: m[1]!, accountId: m[2]! })
      }
    }
    proc.stderr!.on("data", onData)
    proc.once("exit", (code) => reject(new Error(`stripe emulator exited (${code}) before listening: ${buffered.slice(-500)}`)))
  })
  const auth = { authorization: `Bearer ${apiKey}` }
  // Throughput bench: lift Stripe's test-mode 25 req/s limit explicitly.
  await fetch(`${url}/_emulator/rate_limits`, { method: "POST", body: JSON.stringify({ off: true }) })
  const post = async (path: string, form: string) => {
    const r = await fetch(`${url}${path}`, { method: "POST", headers: { ...auth, "content-type": "application/x-www-form-urlencoded" }, body: form })
    if (!r.ok) throw new Error(`emulator ${path}: ${r.status} ${await r.text()}`)
    return (await r.json()) as { id: string }
  }
  // A GET is safe to repeat: a pooled keep-alive socket the child closed as it was reused
  // ("other side closed") once cost a 25M-event month its totals check.
  const get = async <A>(path: string, attempt = 1): Promise<A> => {
    try {
      const r = await fetch(`${url}${path}`)
      if (!r.ok) throw new Error(`emulator ${path}: ${r.status}`)
      return (await r.json()) as A
    } catch (e) {
      if (attempt >= 3 || !(e instanceof TypeError)) throw e
      return get<A>(path, attempt + 1)
    }
  }
  return {
    mode: "child",
    url,
    accountId,
    createMeter: (p) => post("/v1/billing/meters", encodeForm({ ...p, default_aggregation: { formula: "sum" } })),
    createCustomers: async (n) => {
      const ids: Array<string> = []
      for (let done = 0; done < n; done += 10_000) {
        const r = await fetch(`${url}/_emulator/customers`, { method: "POST", body: JSON.stringify({ count: Math.min(10_000, n - done) }) })
        if (!r.ok) throw new Error(`emulator /_emulator/customers: ${r.status} ${await r.text()}`)
        ids.push(...((await r.json()) as { ids: Array<string> }).ids)
      }
      return ids
    },
    calls: async () => {
      const r = await get<{ total: number; by_endpoint: Record<string, number> }>("/_emulator/requests")
      return { total: r.total, byEndpoint: r.by_endpoint }
    },
    totals: async () => {
      const r = await get<{ totals: Array<{ customer: string; event_name: string; sum: string }> }>("/_emulator/meter_events")
      return new Map(r.totals.map((t) => [`${t.customer}\u0000${t.event_name}`, t.sum]))
    },
    close: async () => {
      if (proc.exitCode !== null) return
      const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()))
      proc.kill("SIGTERM")
      await exited
    }
  }
}

export const startEmulator = (mode: EmulatorMode, apiKey: string): Promise<EmulatorTarget> =>
  mode === "child" ? child(apiKey) : inProcess(apiKey)

/** Calls made between two `calls()` snapshots. */
export const callsSince = (
  before: { total: number; byEndpoint: Record<string, number> },
  after: { total: number; byEndpoint: Record<string, number> }
) => ({
  total: after.total - before.total,
  byEndpoint: Object.fromEntries(
    Object.entries(after.byEndpoint)
      .map(([k, v]) => [k, v - (before.byEndpoint[k] ?? 0)] as const)
      .filter(([, v]) => v > 0)
  )
})

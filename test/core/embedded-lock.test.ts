/**
 * Embedded PGlite is single-process: a second `serve` on the same data directory is refused
 * with a clear error, and a process killed with SIGKILL mid-ingest leaves a stale lock that the
 * next start takes over, with every acknowledged event still there.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import { afterAll, describe, expect, it } from "vitest"
import { checkedAnswer, freshDataDir } from "../support/app.js"
import type { SuccessBody } from "../support/routes.js"

const cli = ["--import", "tsx", "src/bin/flexprice.ts"]
const children: Array<ChildProcess> = []

const freePort = () =>
  new Promise<number>((resolve) => {
    const srv = net.createServer()
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })

const startServe = (dataDir: string, port: number) => {
  const child = spawn(process.execPath, [...cli, "serve"], {
    env: { ...process.env, FLEXPRICE_DATA_DIR: dataDir, FLEXPRICE_HTTP_ADDR: `127.0.0.1:${port}`, FLEXPRICE_SCHEDULE_ENABLED: "false" },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.push(child)
  let output = ""
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setInterval(async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`)
        if (res.ok) {
          clearInterval(timer)
          resolve()
        }
      } catch {
        // not yet
      }
    }, 200)
    child.on("exit", (code) => {
      clearInterval(timer)
      reject(new Error(`serve exited with ${code}: ${output}`))
    })
  })
  return { child, ready, output: () => output }
}

const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.on("exit", (c) => resolve(c))))

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
})

describe("embedded data directory", () => {
  it("refuses a second process on the same data directory with a clear error", async () => {
    const dir = freshDataDir()
    const firstPort = await freePort()
    const first = startServe(dir, firstPort)
    await first.ready
    const second = spawnSync(process.execPath, [...cli, "serve"], {
      env: { ...process.env, FLEXPRICE_DATA_DIR: dir, FLEXPRICE_HTTP_ADDR: `127.0.0.1:${await freePort()}` },
      encoding: "utf8",
      timeout: 60_000
    })
    expect(second.status).not.toBe(0)
    expect(second.stderr).toContain(`is in use by process ${first.child.pid}`)
    // the first is unharmed
    const readyz = `http://127.0.0.1:${firstPort}/readyz`
    expect((await checkedAnswer("GET", readyz, await fetch(readyz))).status).toBe(200)
    first.child.kill("SIGTERM")
    await exited(first.child)
    expect(fs.existsSync(`${dir}/flexprice.lock`)).toBe(false)
  }, 120_000)

  it("comes back after SIGKILL during a bulk ingest with every acknowledged event", async () => {
    const dir = freshDataDir()
    const created = spawnSync(process.execPath, [...cli, "tenant", "create", "--name", "killtest"], {
      env: { ...process.env, FLEXPRICE_DATA_DIR: dir },
      encoding: "utf8",
      timeout: 60_000
    })
    expect(created.status).toBe(0)
    const { api_key: apiKey } = JSON.parse(created.stdout.trim()) as { api_key: string }
    const port = await freePort()
    const first = startServe(dir, port)
    await first.ready
    const headers = { "x-api-key": apiKey, "content-type": "application/json" }
    let acknowledged = 0
    let batch = 0
    const ingest = (async () => {
      for (;;) {
        const events = Array.from({ length: 500 }, (_, i) => ({
          event_id: `k-${batch}-${i}`,
          event_name: "kill",
          external_customer_id: "k-cust"
        }))
        batch++
        try {
          const url = `http://127.0.0.1:${port}/v1/events/bulk`
          const res = await checkedAnswer<SuccessBody<"POST", "/v1/events/bulk">>("POST", url, await fetch(url, { method: "POST", headers, body: JSON.stringify({ events }) }))
          if (res.status !== 202) return
          acknowledged += res.data.accepted
        } catch {
          return
        }
      }
    })()
    while (acknowledged < 5000) await new Promise((r) => setTimeout(r, 50))
    first.child.kill("SIGKILL")
    await exited(first.child)
    await ingest
    expect(fs.existsSync(`${dir}/flexprice.lock`)).toBe(true) // left behind by the killed process

    const second = startServe(dir, port)
    await second.ready
    let count = 0
    let cursor: string | null = null
    do {
      const url = `http://127.0.0.1:${port}/v1/events?limit=1000${cursor ? `&cursor=${cursor}` : ""}`
      const page: SuccessBody<"GET", "/v1/events"> = (await checkedAnswer<SuccessBody<"GET", "/v1/events">>("GET", url, await fetch(url, { headers }))).data
      count += page.events.length
      cursor = page.next_cursor
    } while (cursor)
    // every acknowledged event survived; a batch in flight at the kill is all-or-nothing
    expect(count).toBeGreaterThanOrEqual(acknowledged)
    expect(count - acknowledged).toBeLessThanOrEqual(500)
    expect(count % 500).toBe(0)
    second.child.kill("SIGTERM")
    await exited(second.child)
  }, 360_000)
})

/**
 * HTTP metric labels are the route table, not the paths clients send: 500 random paths (404s,
 * 401s, random ids on real routes) add no new `route` label value to /metrics.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startTestApp, type TestApp } from "../support/app.js"

const routeLabels = (scrape: string): Set<string> =>
  new Set(
    scrape
      .split("\n")
      .filter((l) => l.startsWith("flexprice_http_"))
      .flatMap((l) => [...l.matchAll(/route="((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!))
  )

/** kind (see below), method (kinds alternate with it), status, error code */
const EXPECTED_ANSWERS: ReadonlyArray<string> = [
  "0 GET 404 not_found",
  "1 POST 404 not_found",
  "2 GET 404 customer_not_found",
  "3 POST 404 not_found"
]

const randomSegment = () => Math.random().toString(36).slice(2, 12)

describe("HTTP metric labels", () => {
  let app: TestApp
  beforeAll(async () => {
    app = await startTestApp()
  })
  afterAll(() => app?.dispose())

  it("labels by route template; 500 random paths share one label", async () => {
    // one request of each kind first, so their label values exist before the count
    await app.request("GET", "/no-such-path")
    await app.request("GET", "/v1/customers/cust_warmup01")
    await app.request("GET", "/v1/customers/cust_warmup01", undefined, { apiKey: "" })
    const before = routeLabels((await app.request("GET", "/metrics")).text)
    expect(before.has("unmatched")).toBe(true)
    expect(before.has("/v1/customers/:id")).toBe(true)
    const answers = new Set<string>()
    for (let i = 0; i < 500; i++) {
      const kind = i % 4
      const p =
        kind === 0 ? `/${randomSegment()}/${randomSegment()}`
        : kind === 1 ? `/v1/${randomSegment()}`
        : kind === 2 ? `/v1/customers/${randomSegment()}`
        : `/webhooks/stripe/${randomSegment()}/${randomSegment()}/${randomSegment()}`
      const method = i % 2 === 0 ? "GET" : "POST"
      const res = await app.request(method, p, undefined, kind === 3 ? { apiKey: "" } : {})
      answers.add(`${kind} ${method} ${res.status} ${res.status >= 400 ? res.error.code : ""}`)
    }
    // each kind of path gets its specific answer, not merely "some error"
    expect([...answers].sort()).toEqual(EXPECTED_ANSWERS)
    const after = routeLabels((await app.request("GET", "/metrics")).text)
    expect([...after].filter((r) => !before.has(r) && r !== "/metrics")).toEqual([])
    expect(after.size).toBeLessThan(40)
  })
})

/**
 * HTTP metric labels are the route table, not the paths clients send: 500 random paths (404s,
 * 401s, random ids on real routes) add no new `route` label value to /metrics.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import * as TestApp from "../support/TestApp.js"
import { raw } from "../support/TestApp.js"

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

// every request raw: random paths and /metrics (Prometheus text) are outside the typed API
layer(TestApp.layer(), { excludeTestServices: true })("HTTP metric labels", (it) => {
  it.effect("labels by route template; 500 random paths share one label", () =>
    Effect.gen(function* () {
      // one request of each kind first, so their label values exist before the count
      yield* raw("GET", "/no-such-path")
      yield* raw("GET", "/v1/customers/cust_warmup01")
      yield* raw("GET", "/v1/customers/cust_warmup01", { apiKey: "" })
      const before = routeLabels((yield* raw("GET", "/metrics")).text)
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
        const res = yield* raw(method, p, kind === 3 ? { apiKey: "" } : {})
        if (res.status >= 400) expect(res.error, `${method} ${p} → ${res.status}: ${res.text}`).toBeDefined()
        answers.add(`${kind} ${method} ${res.status} ${res.status >= 400 ? res.error?.code : ""}`)
      }
      // each kind of path gets its specific answer, not merely "some error"
      expect([...answers].sort()).toEqual(EXPECTED_ANSWERS)
      const after = routeLabels((yield* raw("GET", "/metrics")).text)
      expect([...after].filter((r) => !before.has(r) && r !== "/metrics")).toEqual([])
      expect(after.size).toBeLessThan(40)
    })
  )
})

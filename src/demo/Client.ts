/** The demo's HTTP client for the service: what a customer's own code would do with fetch. */
import { Effect } from "effect"
import { fetchAnswer, type HttpAnswer } from "./Fetch.js"
import { type BatchView, DemoFailed } from "./Model.js"

export type { HttpAnswer }

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

interface BatchPage {
  readonly batches: Array<BatchView>
  readonly next_cursor: string | null
}

export const fail = (message: string) => new DemoFailed({ message })

export const makeClient = (baseUrl: string) => {
  let apiKey = ""
  const request = (method: string, p: string, body?: unknown): Effect.Effect<HttpAnswer, DemoFailed> =>
    Effect.tryPromise({
      try: () =>
        fetchAnswer(`${baseUrl}${p}`, {
          method,
          headers: { "x-api-key": apiKey, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {})
        }),
      catch: (e) => fail(`${method} ${p}: ${e instanceof Error ? e.message : String(e)}`)
    })
  /** The answer's body, typed by the caller, when the status is one of `ok`; else a DemoFailed. */
  const api = <A = unknown>(method: string, p: string, body?: unknown, ok: ReadonlyArray<number> = [200, 201, 202]) =>
    Effect.flatMap(request(method, p, body), (res) =>
      ok.includes(res.status)
        ? Effect.succeed(res.body as A)
        : Effect.fail(fail(`${method} ${p} answered ${res.status}: ${res.text.slice(0, 300)}`))
    )
  // The Prometheus scrape endpoint; informative only (null when not served).
  const metrics = Effect.tryPromise({
    try: () => fetch(`${baseUrl}/metrics`).then(async (r) => (r.status === 200 ? await r.text() : null)),
    catch: (e) => fail(`GET /metrics: ${String(e)}`)
  })
  const metricSum = (name: string, label?: string) => Effect.map(metrics, (text) => (text === null ? null : promSum(text, name, label)))
  /** Every ledger batch, following the cursor. */
  const listBatches = Effect.gen(function* () {
    const all: Array<BatchView> = []
    let cursor: string | null = null
    do {
      const page: BatchPage = yield* api<BatchPage>(
        "GET",
        `/v1/stripe/sync/batches?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
      )
      all.push(...page.batches)
      cursor = page.next_cursor
    } while (cursor !== null)
    return all
  })
  return {
    baseUrl,
    setApiKey: (key: string) => {
      apiKey = key
    },
    request,
    api,
    metricSum,
    listBatches
  }
}

export type DemoClient = ReturnType<typeof makeClient>

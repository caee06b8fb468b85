import { AsyncLocalStorage } from "node:async_hooks"
/**
 * The HTTP client handed to the `stripe` SDK. It wraps the SDK's own Node client for two reasons:
 *
 * 1. Retries must be ours only. With `maxNetworkRetries: 0` the SDK still retries a request once
 *    when the connection was closed (ECONNRESET/EPIPE, stripe-node#1040). We re-label those errors
 *    (keeping the original code in `originalCode`) so the SDK surfaces them, and our policy decides.
 * 2. Meter event summaries carry `aggregated_value` as a JSON number. Parsing it with JSON.parse
 *    would round long decimals; we turn the literal into a string before parsing so the value
 *    reaches reconciliation exactly as Stripe wrote it.
 */
import * as http from "node:http"
import * as https from "node:https"
import Stripe from "stripe"

type HttpClientInterface = Stripe.HttpClient
type HttpClientResponseInterface = Stripe.HttpClientResponse

const CLOSED_CODES = new Set(["ECONNRESET", "EPIPE"])

/** Quotes the numeric literal of every `"aggregated_value": <number>` so JSON.parse keeps its text. */
export const quoteAggregatedValues = (body: string): string =>
  body.replace(/("aggregated_value"\s*:\s*)(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g, '$1"$2"')

export interface StripeHttpClientOptions {
  /** Upper bound on sockets per host; the per-tenant semaphore normally binds first. */
  readonly maxSockets: number
}

/**
 * Extra headers for the requests made inside `outgoingHeaders.run(headers, ...)`: the Stripe
 * client puts the current span's W3C `traceparent` here so traces continue into Stripe calls
 * (the SDK has no per-call hook that sees our fiber, but its request runs in the same async
 * context).
 */
export const outgoingHeaders = new AsyncLocalStorage<Readonly<Record<string, string>>>()

export const makeStripeHttpClient = (options: StripeHttpClientOptions): HttpClientInterface => {
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: options.maxSockets })
  const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: options.maxSockets })
  const plain = Stripe.createNodeHttpClient(httpAgent)
  const secure = Stripe.createNodeHttpClient(httpsAgent)
  return {
    getClientName: () => "node",
    makeRequest: (host, port, path, method, headers, requestData, protocol, timeout) =>
      (protocol === "http" ? plain : secure)
        .makeRequest(host, port, path, method, { ...headers, ...outgoingHeaders.getStore() }, requestData, protocol, timeout)
        .then(
          (res: HttpClientResponseInterface) => {
            if (path.includes("/event_summaries")) {
              const target = res as unknown as { _parseResponseBody?: (body: string) => unknown }
              const original = target._parseResponseBody
              if (typeof original === "function") {
                target._parseResponseBody = (body: string) => original.call(res, quoteAggregatedValues(body))
              }
            }
            return res
          },
          (error: unknown) => {
            const code = (error as { code?: unknown } | null)?.code
            if (typeof code === "string" && CLOSED_CODES.has(code)) {
              const relabelled = new Error(`connection closed (${code})`) as Error & {
                code: string
                originalCode: string
              }
              relabelled.code = "ECONNCLOSED_NO_SDK_RETRY"
              relabelled.originalCode = code
              throw relabelled
            }
            throw error
          }
        )
  }
}

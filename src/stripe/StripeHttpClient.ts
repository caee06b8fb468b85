import { AsyncLocalStorage } from "node:async_hooks"
/**
 * The HTTP client handed to the `stripe` SDK. It wraps the SDK's own Node client so that:
 *
 * 1. Retries are ours only. With `maxNetworkRetries: 0` the SDK still retries a request once
 *    when the connection was closed (ECONNRESET/EPIPE, stripe-node#1040). We re-label those errors
 *    (keeping the original code in `originalCode`) so the SDK surfaces them, and our policy decides.
 * 2. Outgoing requests carry the current trace headers (`outgoingHeaders`).
 *
 * Meter event summaries are read with the SDK's own JSON parsing: Stripe's `aggregated_value` is
 * a double (SummaryTolerance.ts), which JSON.parse reads without loss.
 */
import * as http from "node:http"
import * as https from "node:https"
import Stripe from "stripe"

type HttpClientInterface = Stripe.HttpClient
type HttpClientResponseInterface = Stripe.HttpClientResponse

const CLOSED_CODES = new Set(["ECONNRESET", "EPIPE"])

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
          (res: HttpClientResponseInterface) => res,
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

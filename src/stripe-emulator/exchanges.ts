/** A tap on every API exchange, for the conformance test against Stripe's OpenAPI description. */
import type { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"

/** One API request and the emulator's answer, as the OpenAPI conformance test checks them. */
export interface Exchange {
  readonly method: string
  readonly path: string
  readonly query: string
  readonly requestBody: string
  readonly requestContentType: string
  readonly status: number
  readonly responseBody: string
}

const recorders = new Set<(exchange: Exchange) => void>()

/**
 * Observes every API exchange of every emulator in this process (control routes excluded) until
 * the returned function is called.
 */
export const recordExchanges = (f: (exchange: Exchange) => void): (() => void) => {
  recorders.add(f)
  return () => {
    recorders.delete(f)
  }
}

export const record = (
  request: HttpServerRequest.HttpServerRequest,
  call: { readonly path: string; readonly search: string; readonly body: string },
  res: HttpServerResponse.HttpServerResponse
) =>
  Effect.sync(() => {
    if (recorders.size === 0) return
    const exchange: Exchange = {
      method: request.method,
      path: call.path,
      query: call.search,
      requestBody: call.body,
      requestContentType: request.headers["content-type"] ?? "",
      status: res.status,
      responseBody: res.body._tag === "Uint8Array" ? new TextDecoder().decode(res.body.body) : ""
    }
    for (const r of recorders) r(exchange)
  })

/** Small helpers for Stripe-shaped answers: JSON replies, error replies, list envelopes, params. */
import { HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import { stringifyJson } from "../domain/Json.js"
import { errorBody, invalidParam, StripeEmulatorError } from "./errors.js"
import { type FormObject, str } from "./form.js"

export const newRequestId = (): string => `req_${randomBytes(9).toString("base64url").replace(/[-_]/g, "0")}`

export const jsonReply = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  HttpServerResponse.text(stringifyJson(body), { status, contentType: "application/json", headers })

export const errorReply = (e: StripeEmulatorError, requestId: string) =>
  jsonReply(errorBody(e, requestId), e.status, { ...e.headers })

/** Runs synchronous state code; StripeEmulatorErrors it throws become typed failures. */
export const attempt = <A>(f: () => A): Effect.Effect<A, StripeEmulatorError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (e) {
      if (e instanceof StripeEmulatorError) return Effect.fail(e)
      return Effect.die(e)
    }
  })

export const parseIntParam = (raw: string | undefined, param: string): number | undefined => {
  if (raw === undefined || raw === "") return undefined
  if (!/^-?\d+$/.test(raw)) throw invalidParam(param, `Invalid integer: ${raw}`)
  return Number(raw)
}

export const listParams = (q: FormObject) => {
  const limit = parseIntParam(str(q, "limit"), "limit")
  if (limit !== undefined && (limit < 1 || limit > 100)) {
    throw invalidParam("limit", "This value must be greater than or equal to 1 and less than or equal to 100.")
  }
  return { limit, startingAfter: str(q, "starting_after"), endingBefore: str(q, "ending_before") }
}

export const list = (data: ReadonlyArray<unknown>, hasMore: boolean, url: string) => ({
  object: "list",
  data,
  has_more: hasMore,
  url
})

/** Endpoint key for counters: ids collapse to `:id` so `GET /v1/customers/cus_1` and `_2` count together. */
export const endpointKey = (method: string, path: string): string =>
  `${method} ${path.replace(/\/(cus|mtr|evt|acct)_[A-Za-z0-9]+/g, "/$1_:id")}`

/**
 * What the handlers of several groups read from a request or write into a view, in one place:
 * the schemas of the parameters whose refusal has its own wire code (`invalid_parameter` for an
 * instant, `invalid_cursor` for a cursor) rather than the generic `invalid_request`.
 */
import { HttpServerRequest } from "@effect/platform"
import { DateTime, Effect, Option, Schema } from "effect"

export const iso = (d: Date | string) => new Date(d).toISOString()
export const isoOrNull = (d: Date | string | null) => (d === null ? null : iso(d))

/**
 * Refusal messages that carry a wire code of their own. A request decoding failure reaches the
 * error contract (ErrorContract.ts) only as a path and a message per issue, so the message is
 * the key: `codedMessage` registers it, `codeOfMessage` finds the code back.
 */
const coded = new Map<string, "invalid_parameter" | "invalid_cursor">()
export const codedMessage = (code: "invalid_parameter" | "invalid_cursor", message: string) => {
  coded.set(message, code)
  return message
}
export const codeOfMessage = (message: string) => coded.get(message)

const RFC3339 = /^\d{4}-\d{2}-\d{2}T/
const INSTANT_MESSAGE = codedMessage("invalid_parameter", "must be an RFC 3339 date-time between years 0001 and 9999")

/**
 * The instant the filter admits: an RFC 3339 date-time (not any string `Date` can read, such as
 * "2024" or "May 5") within the years a PostgreSQL timestamptz and ClickHouse hold, so an
 * out-of-range window is the client's 400, not the database's data error.
 */
const isInstant = (s: string) => {
  if (!RFC3339.test(s)) return false
  const ms = Date.parse(s)
  if (Number.isNaN(ms)) return false
  const year = new Date(ms).getUTCFullYear()
  return year >= 1 && year <= 9999
}

/** A window bound (query or body): an RFC 3339 string on the wire, a `DateTime.Utc` in the handler. */
export const Instant = Schema.String.pipe(
  Schema.filter(isInstant, { message: () => INSTANT_MESSAGE, jsonSchema: { format: "date-time" } }),
  Schema.compose(Schema.DateTimeUtc)
)

export const toDate = (d: DateTime.Utc) => DateTime.toDateUtc(d)
export const toDateOrUndefined = (d: DateTime.Utc | undefined) => (d === undefined ? undefined : DateTime.toDateUtc(d))

/** The caller's address, for the audit log. */
export const sourceIp = Effect.map(HttpServerRequest.HttpServerRequest, (r) => Option.getOrUndefined(r.remoteAddress))

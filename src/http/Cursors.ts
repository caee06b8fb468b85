/**
 * The keyset cursors of the paged listings, one schema each: opaque base64url text on the wire,
 * the last row's sort key in the handler. The listing's URL parameters decode them (a cursor this
 * server did not hand out is refused with `invalid_cursor`, Params.ts) and its response schema
 * encodes `next_cursor`, so no handler parses or prints a cursor itself.
 */
import { Option, ParseResult, Schema } from "effect"
import { codedMessage } from "./Params.js"

const CURSOR_MESSAGE = codedMessage("invalid_cursor", "is not one returned by this endpoint")

/** `base64url("<key>|<id>")`: the sort key's text, then the row id that breaks ties. */
const keyset = <K>(key: Schema.Schema<K>, parseKey: (text: string) => Option.Option<K>, printKey: (k: K) => string) =>
  Schema.transformOrFail(Schema.String, Schema.Struct({ key, id: Schema.String }), {
    strict: true,
    decode: (cursor, _, ast) => {
      const text = Buffer.from(cursor, "base64url").toString("utf8")
      const bar = text.indexOf("|")
      const parsed = bar > 0 ? parseKey(text.slice(0, bar)) : Option.none()
      return Option.isSome(parsed)
        ? ParseResult.succeed({ key: parsed.value, id: text.slice(bar + 1) })
        : ParseResult.fail(new ParseResult.Type(ast, cursor, CURSOR_MESSAGE))
    },
    encode: ({ key, id }) => ParseResult.succeed(Buffer.from(`${printKey(key)}|${id}`).toString("base64url"))
  }).annotations({ description: "opaque: the next_cursor of the previous page" })

/**
 * `base64url(<id>)`: a listing ordered by its row id alone, or whose repository finds the sort key
 * from the id (in the caller's tenant environment). Anything that does not decode to an id of
 * this kind is refused, rather than positioning the page somewhere arbitrary.
 */
const rowId = (prefix: string) =>
  Schema.transformOrFail(Schema.String, Schema.String, {
    strict: true,
    decode: (cursor, _, ast) => {
      const id = Buffer.from(cursor, "base64url").toString("utf8")
      return id.startsWith(prefix) && /^[A-Za-z0-9_-]{1,200}$/.test(id) && Buffer.from(id).toString("base64url") === cursor
        ? ParseResult.succeed(id)
        : ParseResult.fail(new ParseResult.Type(ast, cursor, CURSOR_MESSAGE))
    },
    encode: (id) => ParseResult.succeed(Buffer.from(id).toString("base64url"))
  }).annotations({ description: "opaque: the next_cursor of the previous page" })

/** Customers, by id. */
export const CustomerCursor = rowId("cust_")

/** Migration jobs, newest first: the last job's id (MigrationJobRepo.list finds its started_at). */
export const MigrationCursor = rowId("mig_")

const instantKey = (text: string) => {
  const d = new Date(text)
  return Number.isNaN(d.getTime()) ? Option.none() : Option.some(d)
}

/** Sync batches, newest window first: (window_start, id). */
export const BatchCursor = keyset(Schema.DateFromSelf, instantKey, (d) => d.toISOString())

/** Events, newest first: (timestamp in milliseconds, as both event stores keep it, event_id). */
export const EventCursor = keyset(Schema.DateFromSelf, instantKey, (d) => d.toISOString())

/**
 * Audit entries, newest first: (created_at in microseconds since the epoch, id). A JS Date would
 * drop the microseconds and skip or repeat entries written within one millisecond.
 */
export const AuditCursor = keyset(
  Schema.String,
  (text) => (/^\d{1,18}$/.test(text) ? Option.some(text) : Option.none()),
  (position) => position
)


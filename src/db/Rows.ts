/**
 * Column codecs for the row schemas of the repositories (SqlSchema Result schemas), and the one
 * rule for a row that does not decode.
 *
 * Both backends are reached through postgres.js (PGlite is served on a socket, Database.ts), which
 * answers int8 and numeric as strings (exact: never through a JS number), int4 as numbers and
 * timestamptz as Date. The codecs also accept the other form of each, so a driver setting that
 * changes one of them does not turn every read into a failure.
 */
import { Effect, Schema } from "effect"
import type { ParseError } from "effect/ParseResult"
import { DecimalFromString } from "../domain/Decimal.js"

/** int4 (a number) or int8 / COUNT / SUM (a string of digits). */
export const DbInt = Schema.Union(Schema.Int, Schema.NumberFromString.pipe(Schema.int()))

/** timestamptz. */
export const DbDate = Schema.Union(Schema.DateFromSelf, Schema.DateFromString)

/** numeric read as text (`::text`): its canonical decimal form, exact. */
export const DbQuantity = DecimalFromString

/** jsonb: whatever the driver parsed. */
export const DbJson = Schema.Unknown

/**
 * A row that does not decode is a defect, not a failure a caller could handle: the statement and
 * its schema disagree (a column renamed, a type changed), which no retry fixes. The repositories
 * keep failing with SqlError only.
 */
export const orDieOnRow = <A, E, R>(self: Effect.Effect<A, E | ParseError, R>): Effect.Effect<A, Exclude<E, ParseError>, R> =>
  Effect.catchIf(self, (e): e is ParseError => typeof e === "object" && e !== null && (e as { _tag?: unknown })._tag === "ParseError", Effect.die) as Effect.Effect<
    A,
    Exclude<E, ParseError>,
    R
  >

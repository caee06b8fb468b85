/** What the handlers of several groups read from a request or write into a view, in one place. */
import { HttpServerRequest } from "@effect/platform"
import { Effect, Option } from "effect"
import { InvalidInput } from "../domain/Errors.js"

export const iso = (d: Date | string) => new Date(d).toISOString()
export const isoOrNull = (d: Date | string | null) => (d === null ? null : iso(d))

/** An optional RFC 3339 date-time query parameter. */
export const parseDate = (name: string, v: string | undefined) => {
  if (v === undefined) return Effect.succeed(undefined)
  const d = new Date(v)
  return Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}T/.test(v)
    ? Effect.fail(InvalidInput.of("invalid_parameter", `${name} must be an RFC 3339 date-time`, { parameter: name }))
    : Effect.succeed(d)
}

/** A required one. */
export const requiredDate = (name: string, v: string) =>
  Effect.flatMap(parseDate(name, v), (d) => (d === undefined ? Effect.fail(InvalidInput.of("invalid_parameter", `${name} is required`)) : Effect.succeed(d)))

/** The caller's address, for the audit log. */
export const sourceIp = Effect.map(HttpServerRequest.HttpServerRequest, (r) => Option.getOrUndefined(r.remoteAddress))

/**
 * The one error contract of the HTTP API: every error response is
 * `{"error":{"code","message","details"}}` with the status of its error class. The schemas here
 * encode the domain's tagged errors into that envelope (and decode it back), so the OpenAPI
 * document, what the server sends and clients generated from the document agree; the only
 * responses not made by these schemas are the router's own 404/405 and defects, which the
 * rewriter in Errors.ts wraps in the same envelope.
 */
import { HttpApiSchema } from "@effect/platform"
import type { HttpApiDecodeError } from "@effect/platform/HttpApiError"
import { Cause, Effect, Option, Predicate, Schema } from "effect"
import {
  Conflict,
  Forbidden,
  InternalError,
  InvalidInput,
  NotFound,
  PayloadTooLarge,
  ServiceUnavailable,
  TooManyRequests,
  Unauthorized,
  UpstreamFailed
} from "../domain/Errors.js"
import { scrubString } from "../observability/Scrub.js"
import { codeOfMessage } from "./Params.js"

/** The body of every error response. */
export const ErrorBody = Schema.Struct({
  code: Schema.String.annotations({ description: "stable, snake_case; part of the contract" }),
  message: Schema.String.annotations({ description: "for humans; may change" }),
  details: Schema.optional(Schema.Unknown.annotations({ description: "structured context, when the code has any" }))
})

type Encoded<Tag extends string> = {
  readonly _tag: Tag
  readonly code: string
  readonly message: string
  readonly details?: unknown
}

/**
 * An error class as the API sends it: the envelope on the wire, the tagged error in code, and the
 * class's own status annotation (domain/Errors.ts) as the response status.
 */
const enveloped = <A, Tag extends string>(cls: Schema.Schema<A, Encoded<Tag>>, tag: Tag, description: string) =>
  Schema.transform(Schema.Struct({ error: ErrorBody }), cls, {
    strict: true,
    decode: ({ error }): Encoded<Tag> => ({ _tag: tag, code: error.code, message: error.message, ...(error.details !== undefined ? { details: error.details } : {}) }),
    encode: (e) => ({ error: { code: e.code, message: e.message, ...(e.details !== undefined ? { details: e.details } : {}) } })
  }).annotations({
    ...HttpApiSchema.annotations({ status: HttpApiSchema.getStatusError(cls) }),
    identifier: tag,
    description
  })

const invalidInputDescription = "The request is malformed or violates a rule (including request decoding: code invalid_request)"
export const InvalidInputResponse = enveloped(InvalidInput, "InvalidInput", invalidInputDescription)
export const UnauthorizedResponse = enveloped(Unauthorized, "Unauthorized", "No or an invalid API key")
export const ForbiddenResponse = enveloped(Forbidden, "Forbidden", "The caller is not allowed here (e.g. a webhook from an address outside the allowlist)")
export const NotFoundResponse = enveloped(NotFound, "NotFound", "The entity does not exist in this tenant environment")
export const ConflictResponse = enveloped(Conflict, "Conflict", "Conflicts with existing state")
export const PayloadTooLargeResponse = enveloped(PayloadTooLarge, "PayloadTooLarge", "The body is larger than the cap")
export const TooManyRequestsResponse = enveloped(TooManyRequests, "TooManyRequests", "Retry after details.retry_after_seconds (also the Retry-After header)")
export const InternalErrorResponse = enveloped(InternalError, "InternalError", "Something on the server's side failed")
export const UpstreamFailedResponse = enveloped(UpstreamFailed, "UpstreamFailed", "Stripe refused or failed a call made for this request")
export const ServiceUnavailableResponse = enveloped(ServiceUnavailable, "ServiceUnavailable", "A dependency (database, event store) is not reachable; retry later")

/**
 * What a schema expected, in words: the platform's formatter names a struct or an array by its
 * TypeScript type (`{ readonly external_id: minLength(1) & … }`), which says nothing to a client.
 */
const expectedInWords = (expected: string): string => {
  if (expected.startsWith("{")) return "an object"
  if (expected.startsWith("ReadonlyArray<") || expected.startsWith("readonly [") || expected.startsWith("Array<")) return "an array"
  if (expected === "string") return "a string"
  if (expected === "number" || expected === "finite" || expected === "NumberFromString") return "a number"
  if (expected === "boolean") return "a boolean"
  if (expected === "null") return "null"
  return expected
}

type FormattedIssue = { readonly _tag: string; readonly path: ReadonlyArray<PropertyKey>; readonly message: string }

const where = (path: ReadonlyArray<PropertyKey>) => (path.length === 0 ? "request" : path.map(String).join("."))

/** The platform's wording of a value of the wrong type. */
const TYPED = /^Expected ([\s\S]*), actual ([\s\S]*)$/

/**
 * The refused value as echoed back: enough to recognise it, not a copy of a large body, and
 * through the secret scrubber first (a key sent in the wrong field is not repeated, not even cut).
 */
const shown = (actual: string | undefined) => {
  const scrubbed = scrubString(actual ?? "")
  return scrubbed.length > 80 ? `${scrubbed.slice(0, 80)}…` : scrubbed
}

/** `external_id: expected a string, got 5`, from one issue of the platform's array formatter. */
const describeIssue = (issue: FormattedIssue): string => {
  const typed = TYPED.exec(issue.message)
  if (typed !== null) return `${where(issue.path)}: expected ${expectedInWords(typed[1] ?? "")}, got ${shown(typed[2])}`
  if (issue._tag === "Missing") return `${where(issue.path)}: is required`
  if (issue._tag === "Unexpected") return `${where(issue.path)}: is not allowed`
  return `${where(issue.path)}: ${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}`
}

/**
 * One line per field: the members of a union that all refused the same value are one
 * expectation (`expected "COUNT" or "SUM", got "AVG"`), and the `undefined` member of an optional
 * field is not mentioned beside the member that says what the field should hold.
 */
const describeIssues = (issues: ReadonlyArray<FormattedIssue>): Array<{ readonly path: Array<string>; readonly message: string }> => {
  const relevant = issues.filter((i) => !(TYPED.exec(i.message)?.[1] === "undefined" && issues.length > 1))
  const byField = new Map<string, { path: Array<string>; expected: Array<string>; got: string | undefined; others: Array<string> }>()
  for (const issue of relevant) {
    const key = where(issue.path)
    const entry = byField.get(key) ?? { path: issue.path.map(String), expected: [], got: undefined, others: [] }
    byField.set(key, entry)
    const m = TYPED.exec(issue.message)
    if (m !== null && (entry.got === undefined || entry.got === m[2])) {
      entry.expected.push(expectedInWords(m[1] ?? ""))
      entry.got = m[2]
    } else entry.others.push(describeIssue(issue))
  }
  return [...byField.entries()].flatMap(([key, e]) => [
    ...(e.expected.length > 0 ? [{ path: e.path, message: `${key}: expected ${[...new Set(e.expected)].join(" or ")}, got ${shown(e.got)}` }] : []),
    ...e.others.map((message) => ({ path: e.path, message }))
  ])
}

/**
 * A refusal by the parameter schemas of Params.ts, which keep the codes the handlers answered
 * before the schemas did the parsing (`invalid_parameter`, `invalid_cursor`): only when every
 * issue is one of theirs (a wrong type or a missing field stays `invalid_request`). The `undefined`
 * member of an optional parameter refuses the same value and is not an issue of its own.
 */
const codedRefusal = (all: ReadonlyArray<FormattedIssue>): InvalidInput | undefined => {
  const issues = all.filter((i) => TYPED.exec(i.message)?.[1] !== "undefined")
  const code = issues.length === 0 ? undefined : codeOfMessage(issues[0]!.message)
  if (code === undefined || issues.some((i) => codeOfMessage(i.message) !== code)) return undefined
  const message = issues.map((i) => `${where(i.path)} ${i.message}`).join("; ")
  return InvalidInput.of(code, message, { parameter: where(issues[0]!.path) })
}

/**
 * A request the endpoint's schemas refused (path, query, headers or body): 400 `invalid_request`
 * naming each field and what was expected; details.issues keeps the path of each.
 */
export const invalidRequest = (e: HttpApiDecodeError): InvalidInput => {
  const coded = codedRefusal(e.issues)
  if (coded !== undefined) return coded
  const issues = describeIssues(e.issues).map((i) => ({ path: i.path, message: scrubString(i.message) }))
  const message = issues.length === 0 ? "the request does not match the expected schema" : issues.map((i) => i.message).slice(0, 5).join("; ")
  return InvalidInput.of("invalid_request", message, { issues })
}

const isDecodeFailure = (e: unknown): e is HttpApiDecodeError => Predicate.isTagged(e, "HttpApiDecodeError")

/**
 * For the API middleware (Server.ts): the platform's own decode failure becomes the typed
 * `InvalidInput`, which the error schemas then encode like any other error. The platform types
 * the app as failing with `never`, hence the look into the cause.
 */
export const decodeFailureAsInvalidInput = <A, R>(app: Effect.Effect<A, never, R>): Effect.Effect<A, InvalidInput, R> =>
  Effect.catchAllCause(app, (cause) => {
    const failure: unknown = Option.getOrUndefined(Cause.failureOption(cause))
    return isDecodeFailure(failure) ? Effect.fail(invalidRequest(failure)) : Effect.failCause(cause)
  })

type Json = { [key: string]: unknown }

const isDecodeErrorRef = (s: unknown) => typeof s === "object" && s !== null && (s as Json)["$ref"] === "#/components/schemas/HttpApiDecodeError"

/**
 * The document without the platform's `HttpApiDecodeError` body, which the server never sends
 * (DecodeFailuresAsInvalidInput turns it into InvalidInput). `HttpApi.make` adds that error to
 * every API and offers no way to leave it out, hence this edit of the generated document.
 */
export const withoutPlatformDecodeError = (spec: Json): Json => {
  const paths = spec["paths"] as Record<string, Record<string, { responses: Record<string, { description: string; content?: Record<string, { schema: Json }> }> }>>
  for (const ops of Object.values(paths))
    for (const op of Object.values(ops)) {
      const bad = op.responses["400"]
      const json = bad?.content?.["application/json"]
      if (bad === undefined || json === undefined) continue
      const anyOf = json.schema["anyOf"]
      if (Array.isArray(anyOf)) {
        const rest = anyOf.filter((s) => !isDecodeErrorRef(s))
        json.schema = rest.length === 1 ? (rest[0] as Json) : { ...json.schema, anyOf: rest }
      }
      bad.description = invalidInputDescription
    }
  const components = spec["components"] as { schemas: Record<string, unknown> }
  const text = JSON.stringify(paths)
  for (const name of ["HttpApiDecodeError", "Issue", "PropertyKey"])
    if (name === "HttpApiDecodeError" || !text.includes(`#/components/schemas/${name}"`)) delete components.schemas[name]
  return spec
}

/** Encoded form of one error response (what tests and clients read). */
export type ErrorEnvelope = Schema.Schema.Encoded<typeof InvalidInputResponse>

/**
 * Typed domain errors. Every error that can reach a caller carries a stable `code` (snake_case,
 * part of the public contract), a human `message`, and optional structured `details`.
 * The HTTP layer (http/ErrorContract.ts) encodes them as `{"error":{"code","message","details"}}`
 * with the status annotated here.
 * Messages never contain secrets.
 */
import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

const fields = {
  code: Schema.String,
  message: Schema.String,
  details: Schema.optional(Schema.Unknown)
}

/** 400: the request is malformed or violates a rule. */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", fields, HttpApiSchema.annotations({ status: 400 })) {
  static of(code: string, message: string, details?: unknown) {
    return new InvalidInput({ code, message, details })
  }
}

/** 401: no or bad API key. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", fields, HttpApiSchema.annotations({ status: 401 })) {}

/** 403: the caller may not use this endpoint (e.g. a webhook sender outside the allowlist). */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", fields, HttpApiSchema.annotations({ status: 403 })) {}

/** 429: the client must wait (details.retry_after_seconds, also the Retry-After header). */
export class TooManyRequests extends Schema.TaggedError<TooManyRequests>()("TooManyRequests", fields, HttpApiSchema.annotations({ status: 429 })) {}

/** 404: the entity does not exist in this tenant environment. */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", fields, HttpApiSchema.annotations({ status: 404 })) {
  static of(entity: string, id: string) {
    return new NotFound({ code: `${entity}_not_found`, message: `${entity} ${id} not found`, details: { id } })
  }
}

/** 409: conflicts with existing state (duplicate external_id, running migration, ...). */
export class Conflict extends Schema.TaggedError<Conflict>()("Conflict", fields, HttpApiSchema.annotations({ status: 409 })) {
  static of(code: string, message: string, details?: unknown) {
    return new Conflict({ code, message, details })
  }
}

/** 413: the body is larger than the cap. */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", fields, HttpApiSchema.annotations({ status: 413 })) {}

/** 422/502 style failures from Stripe surfaced to an admin (e.g. meter lookup failed). */
export class UpstreamFailed extends Schema.TaggedError<UpstreamFailed>()("UpstreamFailed", fields, HttpApiSchema.annotations({ status: 502 })) {}

/** 500: something on our side failed; `code` says what, details stay in logs. */
export class InternalError extends Schema.TaggedError<InternalError>()("InternalError", fields, HttpApiSchema.annotations({ status: 500 })) {
  static of(code: string, message: string) {
    return new InternalError({ code, message })
  }
}

/** 503: a dependency (database, event store) is not reachable. */
export class ServiceUnavailable extends Schema.TaggedError<ServiceUnavailable>()("ServiceUnavailable", fields, HttpApiSchema.annotations({ status: 503 })) {}

export type ApiFailure =
  | InvalidInput
  | Unauthorized
  | Forbidden
  | NotFound
  | Conflict
  | PayloadTooLarge
  | UpstreamFailed
  | InternalError
  | ServiceUnavailable

/**
 * Translation of infrastructure failures into API errors, and the net under the error contract:
 * typed errors and request decoding failures are encoded by the schemas of ErrorContract.ts;
 * what no schema made — the router's empty 404/405 and a defect's empty 500 — is wrapped here in
 * the same `{"error":{"code","message"}}`.
 */
import { HttpApi, HttpApp, HttpServerResponse } from "@effect/platform"
import type { SqlError } from "@effect/sql"
import { Effect, Option } from "effect"
import { InvalidInput, ServiceUnavailable } from "../domain/Errors.js"
import type { EventStoreError } from "../events/EventStore.js"

/** The SQLSTATE of a database error, when the driver gave one. */
export const sqlState = (e: unknown): string | undefined => {
  const cause = typeof e === "object" && e !== null ? (e as { cause?: unknown }).cause : undefined
  const code = typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

/**
 * Database or event store failures become 503 with a stable code; the cause goes to the log.
 * A data exception (SQLSTATE class 22: a value the column cannot hold) is the request's fault,
 * not the database's: 400 `invalid_value`, never "retry later". The edge checks should make it
 * unreachable; this is the net below them.
 */
export const orUnavailable = <A, E, R>(effect: Effect.Effect<A, E | SqlError.SqlError | EventStoreError, R>) =>
  Effect.catchIf(
    effect,
    (e): e is SqlError.SqlError | EventStoreError =>
      typeof e === "object" && e !== null && "_tag" in e && (e._tag === "SqlError" || e._tag === "EventStoreError"),
    (e): Effect.Effect<never, InvalidInput | ServiceUnavailable> => {
      const state = e._tag === "SqlError" ? sqlState(e) : undefined
      if (state !== undefined && state.startsWith("22"))
        return Effect.logWarning("request refused by a database data check", { sqlstate: state }).pipe(
          Effect.zipRight(Effect.fail(InvalidInput.of("invalid_value", "a value in the request cannot be stored (out of range or invalid characters)", { sqlstate: state })))
        )
      return Effect.logError("storage failure", e).pipe(
        Effect.zipRight(
          Effect.fail(
            new ServiceUnavailable({
              code: e._tag === "SqlError" ? "database_unavailable" : "event_store_unavailable",
              message: e._tag === "SqlError" ? "the database is not reachable; retry later" : "the event store is not reachable; retry later"
            })
          )
        )
      )
    }
  ) as Effect.Effect<A, Exclude<E, SqlError.SqlError | EventStoreError> | ServiceUnavailable | InvalidInput, R>

const decoder = new TextDecoder()
const encoder = new TextEncoder()

const codeForStatus = (status: number): string =>
  status === 404 ? "not_found" : status === 405 ? "method_not_allowed" : status === 413 ? "payload_too_large" : status === 401 ? "unauthorized" : status >= 500 ? "internal_error" : "bad_request"

const isEnvelope = (body: unknown) =>
  typeof body === "object" && body !== null && "error" in body && Object.keys(body).length === 1

const messageForStatus = (status: number): string =>
  status === 404 ? "no such route" : status === 405 ? "this route does not accept that method" : "request failed"

const fromBody = (res: HttpServerResponse.HttpServerResponse): Option.Option<unknown> => {
  const body = res.body
  if (body._tag === "Uint8Array") {
    if (body.body.length === 0) return Option.some(undefined)
    const text = decoder.decode(body.body)
    try {
      return Option.some(JSON.parse(text))
    } catch {
      return Option.some(text)
    }
  }
  if (body._tag === "Empty") return Option.some(undefined)
  return Option.none()
}

const segment = (s: string) => (s.startsWith(":") ? "[^/]+" : s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))

/** The methods each path of an API answers: `allowed(path)` is empty for a path it does not serve. */
export const routeMethods = (api: HttpApi.HttpApi.Any): ((path: string) => ReadonlyArray<string>) => {
  const routes: Array<{ readonly pattern: RegExp; readonly method: string }> = []
  HttpApi.reflect(api as unknown as HttpApi.HttpApi.AnyWithProps, {
    onGroup: () => {},
    onEndpoint: ({ endpoint }) =>
      routes.push({ pattern: new RegExp(`^${endpoint.path.split("/").map(segment).join("/")}$`), method: endpoint.method })
  })
  return (path) => [...new Set(routes.filter((r) => r.pattern.test(path)).map((r) => r.method))]
}

/**
 * The router answers an empty 404 for a path it serves under another method: that is 405 with
 * the methods it does accept in `Allow` (RFC 9110 §15.5.6).
 */
const methodNotAllowed = (
  method: string,
  url: string,
  res: HttpServerResponse.HttpServerResponse,
  allowed: (path: string) => ReadonlyArray<string>
): HttpServerResponse.HttpServerResponse => {
  if (res.status !== 404 || res.body._tag !== "Empty") return res
  const methods = allowed(url.split("?")[0] ?? "")
  if (methods.length === 0 || methods.includes(method)) return res
  return HttpServerResponse.empty({ status: 405, headers: res.headers }).pipe(HttpServerResponse.setHeader("allow", methods.join(", ")))
}

/** The envelope for one response (≥ 400 only) that is not one already. */
export const toEnvelope = (res: HttpServerResponse.HttpServerResponse): HttpServerResponse.HttpServerResponse => {
  if (res.status < 400) return res
  return Option.match(fromBody(res), {
    onNone: () => res,
    onSome: (body) => {
      if (isEnvelope(body)) return res
      // a body that is not an envelope is not echoed: it was never meant for the client
      const wrapped = { error: { code: codeForStatus(res.status), message: messageForStatus(res.status) } }
      return HttpServerResponse.uint8Array(encoder.encode(JSON.stringify(wrapped)), {
        status: res.status,
        headers: res.headers,
        contentType: "application/json"
      })
    }
  })
}

/** The envelope's code and message of an error response, as the client will see them. */
export const errorSummary = (res: HttpServerResponse.HttpServerResponse): { readonly code: string; readonly message: string } | undefined => {
  const enveloped = toEnvelope(res)
  if (enveloped.body._tag !== "Uint8Array") return undefined
  try {
    const e = (JSON.parse(decoder.decode(enveloped.body.body)) as { error?: { code?: unknown; message?: unknown } }).error
    return e && typeof e.code === "string" ? { code: e.code, message: typeof e.message === "string" ? e.message : "" } : undefined
  } catch {
    return undefined
  }
}

/**
 * Wrap every ≥ 400 response that is not an envelope yet. A pre-response handler, because the
 * server sends error responses before outer middleware sees them.
 */
export const errorEnvelope =
  (allowed: (path: string) => ReadonlyArray<string>) =>
  <E, R>(app: HttpApp.Default<E, R>): HttpApp.Default<E, R> =>
    HttpApp.withPreResponseHandler(app, (request, response) => Effect.succeed(toEnvelope(methodNotAllowed(request.method, request.url, response, allowed))))

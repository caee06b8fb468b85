/**
 * The edge check every request passes before routing: text the database could not keep
 * exactly (NUL, unpaired surrogates) in the path, the query or a JSON body is refused with the
 * field that holds it; JSON bodies must parse (`malformed_json`), stay under the size cap
 * (413 `payload_too_large`) and nest at most 64 levels. Without it these surfaced as 503
 * "retry later" (PostgreSQL data errors), 500s, or — for surrogates — silently merged ids.
 *
 * Event ingestion and webhooks read their own bodies (exact numbers, raw bytes for the
 * signature) and check the same things themselves, per event or per delivery.
 */
import { HttpMiddleware, HttpServerRequest, HttpServerResponse, HttpIncomingMessage } from "@effect/platform"
import { Effect, Option } from "effect"
import { findBadText, safeKey, textProblem } from "../domain/Text.js"

export const MAX_JSON_DEPTH = 64

const refuse = (status: number, code: string, message: string, details?: Record<string, unknown>) =>
  HttpServerResponse.unsafeJson({ error: { code, message, ...(details ? { details } : {}) } }, { status })

const invalidText = (field: string, problem: string) =>
  refuse(400, "invalid_text", `${field} ${problem}`, { field })

/** Path and query: each segment and parameter decoded as the router will see it. */
const checkUrl = (url: string): HttpServerResponse.HttpServerResponse | undefined => {
  const q = url.indexOf("?")
  const pathname = q < 0 ? url : url.slice(0, q)
  for (const seg of pathname.split("/")) {
    let decoded: string
    try {
      decoded = decodeURIComponent(seg)
    } catch {
      return refuse(400, "invalid_text", "the path is not valid percent-encoded UTF-8", { field: "path" })
    }
    const p = textProblem(decoded)
    if (p !== null) return invalidText("path", p)
  }
  if (q < 0) return undefined
  for (const part of url.slice(q + 1).split("&")) {
    const eq = part.indexOf("=")
    let key: string
    let value: string
    try {
      key = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, " "))
      value = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "))
    } catch {
      return refuse(400, "invalid_text", "the query string is not valid percent-encoded UTF-8", { field: "query" })
    }
    const kp = textProblem(key)
    if (kp !== null) return invalidText("query parameter name", kp)
    const vp = textProblem(value)
    if (vp !== null) return invalidText(safeKey(key), vp)
  }
  return undefined
}

const ownBodies = (pathname: string) => pathname.startsWith("/webhooks/") || pathname === "/v1/events" || pathname === "/v1/events/bulk"

export const inputGuard = (maxBodyBytes: number) =>
  HttpMiddleware.make((app) =>
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const urlProblem = checkUrl(request.url)
      if (urlProblem !== undefined) return urlProblem
      const pathname = request.url.split("?")[0] ?? ""
      const contentType = (request.headers["content-type"] ?? "").toLowerCase()
      const hasBody = request.method !== "GET" && request.method !== "HEAD" && request.method !== "OPTIONS"
      if (!hasBody || ownBodies(pathname) || !(contentType === "" || contentType.includes("json"))) return yield* app
      const tooLarge = refuse(413, "payload_too_large", `request body exceeds ${maxBodyBytes} bytes`, { max_bytes: maxBodyBytes })
      const declared = Number(request.headers["content-length"] ?? "0")
      if (Number.isFinite(declared) && declared > maxBodyBytes) return tooLarge
      // `text` is cached by the request: the API's own payload decoding reads the same string
      const text = yield* request.text.pipe(HttpIncomingMessage.withMaxBodySize(Option.some(maxBodyBytes)), Effect.option)
      if (Option.isNone(text)) return tooLarge
      if (text.value.trim() === "") return yield* app
      let body: unknown
      try {
        body = JSON.parse(text.value)
      } catch (e) {
        return refuse(400, "malformed_json", `the body is not valid JSON: ${e instanceof Error ? e.message.slice(0, 200) : "parse error"}`)
      }
      const bad = findBadText(body, "", MAX_JSON_DEPTH)
      if (bad !== null)
        return bad.problem === "too_deep"
          ? refuse(400, "nesting_too_deep", `JSON nests deeper than ${MAX_JSON_DEPTH} levels`, { max_depth: MAX_JSON_DEPTH })
          : invalidText(bad.field === "" ? "body" : bad.field, bad.problem)
      return yield* app
    })
  )

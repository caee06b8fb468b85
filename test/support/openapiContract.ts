/**
 * Checks one HTTP response against the committed openapi.json with a standard JSON Schema
 * validator (ajv, draft 2020-12 as OpenAPI 3.1 uses): the status is documented for the route and
 * method, the content type is the documented one, and the body matches its schema. Responses to
 * paths the document does not describe must be the router's 404 in the error envelope; a
 * documented path with an undocumented method must be 405 in the envelope. The shared test
 * client (app.ts) runs every response through it.
 */
import { Ajv2020 } from "ajv/dist/2020.js"
import addFormats from "ajv-formats"
import type { ValidateFunction } from "ajv"
import * as fs from "node:fs"

type Json = { [key: string]: unknown }
interface Operation {
  readonly responses: Record<string, { readonly content?: Record<string, { readonly schema: unknown }> }>
}
type Document = { readonly paths: Record<string, Record<string, Operation>>; readonly components: { readonly schemas: Record<string, unknown> } }

/** Served beside the API and deliberately not part of it (Prometheus, the docs page, the document itself). */
const OUTSIDE_THE_API = new Set(["/metrics", "/docs", "/openapi.json"])

export interface ObservedResponse {
  readonly method: string
  /** path with or without the query string */
  readonly url: string
  readonly status: number
  readonly contentType: string | null
  /** the raw body text */
  readonly text: string
}

/** Every `$id` removed: the generator repeats `"$id": "/schemas/unknown"`, which ajv refuses to register twice. */
const withoutIds = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(withoutIds)
  if (typeof value !== "object" || value === null) return value
  const out: Json = {}
  for (const [k, v] of Object.entries(value)) if (k !== "$id") out[k] = withoutIds(v)
  return out
}

const pointer = (...parts: Array<string>) => parts.map((p) => p.replace(/~/g, "~0").replace(/\//g, "~1")).join("/")

export interface Contract {
  /** The mismatches of one response; empty when it is what the document says. */
  readonly check: (response: ObservedResponse) => ReadonlyArray<string>
  /** Throws with every mismatch of one response. */
  readonly assert: (response: ObservedResponse) => void
}

export const makeContract = (documentText: string): Contract => {
  const doc = JSON.parse(documentText) as Document
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true })
  addFormats.default(ajv)
  ajv.addSchema({ ...(withoutIds(doc) as Json), $id: "openapi.json" })
  const compiled = new Map<string, ValidateFunction>()
  const validatorFor = (ref: string): ValidateFunction => {
    const known = compiled.get(ref)
    if (known !== undefined) return known
    const v = ajv.compile({ $ref: ref })
    compiled.set(ref, v)
    return v
  }
  // Literal segments before parameters: /v1/x/bulk is matched before /v1/x/{id}.
  const routes = Object.keys(doc.paths)
    .map((template) => ({
      template,
      params: (template.match(/\{/g) ?? []).length,
      regex: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+")}$`)
    }))
    .sort((a, b) => a.params - b.params)
  const envelopeRef = "openapi.json#/components/schemas/NotFound"

  const checkJson = (ref: string, text: string, problems: Array<string>) => {
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      problems.push(`body is not JSON: ${text.slice(0, 200)}`)
      return
    }
    const validate = validatorFor(ref)
    if (!validate(body))
      problems.push(`body does not match ${ref.replace("openapi.json#", "")}: ${ajv.errorsText(validate.errors, { separator: "; " })}; body ${text.slice(0, 300)}`)
  }

  const check = (r: ObservedResponse): ReadonlyArray<string> => {
    const problems: Array<string> = []
    const method = r.method.toLowerCase()
    const path = r.url.split("?")[0] ?? ""
    if (OUTSIDE_THE_API.has(path) || method === "head" || method === "options") return problems
    const mediaType = (r.contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? ""
    const route = routes.find((candidate) => candidate.regex.test(path))
    const envelopeOnly = (expected: number, why: string) => {
      if (r.status !== expected) problems.push(`${why}: expected status ${expected}, got ${r.status}`)
      if (mediaType !== "application/json") problems.push(`content type ${r.contentType ?? "(none)"}, expected application/json`)
      checkJson(envelopeRef, r.text, problems)
    }
    if (route === undefined) {
      envelopeOnly(404, `${path} is not in openapi.json`)
      return problems
    }
    const operation = doc.paths[route.template]?.[method]
    if (operation === undefined) {
      envelopeOnly(405, `${method.toUpperCase()} is not documented for ${route.template}`)
      return problems
    }
    const status = String(r.status)
    const documented = operation.responses[status] ?? operation.responses["default"]
    if (documented === undefined) {
      problems.push(`status ${status} is not documented for ${method.toUpperCase()} ${route.template} (documented: ${Object.keys(operation.responses).join(", ")}); body ${r.text.slice(0, 300)}`)
      return problems
    }
    const key = operation.responses[status] !== undefined ? status : "default"
    const content = documented.content
    if (content === undefined) {
      if (r.text !== "") problems.push(`status ${status} is documented without a body, got ${r.text.slice(0, 200)}`)
      return problems
    }
    if (content[mediaType] === undefined) {
      problems.push(`content type ${r.contentType ?? "(none)"} is not documented for ${status} (documented: ${Object.keys(content).join(", ")})`)
      return problems
    }
    const ref = `openapi.json#/${pointer("paths", route.template, method, "responses", key, "content", mediaType, "schema")}`
    if (mediaType.includes("json")) checkJson(ref, r.text, problems)
    else {
      const validate = validatorFor(ref)
      if (!validate(r.text)) problems.push(`body does not match ${ref}: ${ajv.errorsText(validate.errors)}`)
    }
    return problems
  }

  return {
    check,
    assert: (r) => {
      const problems = check(r)
      if (problems.length > 0)
        throw new Error(`${r.method} ${r.url} → ${r.status} does not match openapi.json:\n  ${problems.join("\n  ")}`)
    }
  }
}

let shared: Contract | undefined

/** The contract of the committed openapi.json, read once per test worker. */
export const openApiContract = (): Contract => {
  shared ??= makeContract(fs.readFileSync(new URL("../../openapi.json", import.meta.url), "utf8"))
  return shared
}

/** Off only when FLEXPRICE_TEST_OPENAPI=off (e.g. to see a suite's own failure first). */
export const contractCheckEnabled = (): boolean => process.env["FLEXPRICE_TEST_OPENAPI"] !== "off"

/**
 * OpenAPI conformance: every exchange the emulator answers during the emulator suite is checked
 * against Stripe's own OpenAPI description (an extract, see test/fixtures/stripe-openapi/README.md): the response body
 * against the schema of its path, method and status (or `default` for errors), the request's
 * form body and query against the request schemas (decoded, with string → number/boolean
 * coercion because form encoding carries only strings). A mismatch fails with the path and the
 * JSON pointer.
 *
 * The suite's files are imported here, so their tests run again with the recorder installed.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Ajv, type ValidateFunction } from "ajv"
import formatsModule from "ajv-formats"
import { existsSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { decodeForm, type Exchange, recordExchanges } from "../../src/stripe-emulator/index.js"

/**
 * The extract is data fetched from a public repository, which this workplace does not commit, so
 * it lives outside the repository: FLEXPRICE_STRIPE_OPENAPI, else ../shared/stripe-openapi/
 * beside the repository root. Without it the check is skipped (a fresh clone must not fail),
 * and the test's name and a warning say how to produce it.
 */
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url))
const FIXTURE_CANDIDATES = [
  ...(process.env.FLEXPRICE_STRIPE_OPENAPI ? [process.env.FLEXPRICE_STRIPE_OPENAPI] : []),
  fileURLToPath(new URL("../shared/stripe-openapi/spec3.subset.json", `file://${REPO_ROOT}`))
]
const FIXTURE = FIXTURE_CANDIDATES.find((p) => existsSync(p))
const MISSING =
  `skipped: Stripe's OpenAPI extract not found (looked at ${FIXTURE_CANDIDATES.join(", ")}); it is not committed ` +
  "(data fetched from a public repository). Produce it with `npx tsx scripts/refresh-stripe-openapi.ts " +
  "<checkout of github.com/stripe/openapi> [commit] [output path]` and point FLEXPRICE_STRIPE_OPENAPI at it"
if (FIXTURE === undefined) console.warn(`conformance.test.ts ${MISSING}`)

const exchanges: Array<Exchange> = []
let stop: (() => void) | undefined
beforeAll(() => {
  stop = recordExchanges((e) => exchanges.push(e))
})
afterAll(() => stop?.())

// Without the extract nothing is checked, so the suites are not run a second time for nothing.
if (FIXTURE !== undefined) {
  await import("./customers.test.js")
  await import("./meter-events.test.js")
  await import("./faults.test.js")
  await import("./webhooks.test.js")
  await import("./faithful.test.js")
}

interface Operation {
  readonly parameters?: ReadonlyArray<{ readonly name: string; readonly in: string; readonly schema: unknown; readonly required?: boolean }>
  readonly requestBody?: { readonly content: Record<string, { readonly schema: unknown }> }
  readonly responses: Record<string, { readonly content?: Record<string, { readonly schema: unknown }> }>
}
interface Spec {
  readonly info: { readonly version: string }
  readonly "x-paths-not-in-source": ReadonlyArray<string>
  readonly paths: Record<string, Record<string, Operation>>
  readonly components: { readonly schemas: Record<string, unknown> }
}

/** OpenAPI 3.0 `nullable: true` as JSON Schema (Ajv refuses `nullable` without `type`). */
const jsonSchema = (node: unknown): unknown => {
  if (Array.isArray(node)) return node.map(jsonSchema)
  if (node === null || typeof node !== "object") return node
  const { nullable, ...rest } = node as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(rest)) out[k] = k === "properties" || k === "x-expansionResources" ? mapValues(v) : jsonSchema(v)
  return nullable === true ? { anyOf: [out, { type: "null" }] } : out
}
const mapValues = (v: unknown): unknown =>
  v !== null && typeof v === "object" && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSchema(x)]))
    : v

const templateRegex = (template: string) => new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`)

describe("emulator conformance with Stripe's OpenAPI description", () => {
  it.skipIf(FIXTURE === undefined)(
    `every recorded response and request matches its schema${FIXTURE === undefined ? ` (${MISSING})` : ""}`,
    () => {
    if (FIXTURE === undefined) return
    const spec = jsonSchema(JSON.parse(readFileSync(FIXTURE, "utf8"))) as Spec
    const make = (coerce: boolean) => {
      const ajv = new Ajv({ strict: false, allErrors: true, coerceTypes: coerce })
      // ajv-formats is CommonJS: its default export arrives as the module object under NodeNext.
      const addFormats = (formatsModule as unknown as { default: (a: Ajv) => Ajv }).default ?? formatsModule
      addFormats(ajv)
      ajv.addFormat("unix-time", true)
      ajv.addFormat("decimal", true)
      ajv.addSchema({ components: spec.components }, "stripe")
      return ajv
    }
    const responses = make(false)
    const requests = make(true)
    const cache = new Map<string, ValidateFunction>()
    const compile = (ajv: Ajv, key: string, schema: unknown) => {
      let v = cache.get(key)
      if (!v) {
        const rewritten = JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"stripe#/components/')) as object
        v = ajv.compile(rewritten)
        cache.set(key, v)
      }
      return v
    }
    const templates = Object.keys(spec.paths).map((t) => ({ t, re: templateRegex(t) }))
    const problems: Array<string> = []
    const uncovered = new Map<string, number>()
    let checked = 0
    expect(exchanges.length).toBeGreaterThan(100)
    for (const x of exchanges) {
      const template = templates.find((c) => c.re.test(x.path))?.t
      const op = template ? spec.paths[template]?.[x.method.toLowerCase()] : undefined
      if (!template || !op) {
        const k = `${x.method} ${x.path.replace(/\/(cus|mtr|evt|acct)_[A-Za-z0-9_]+/g, "/$1_:id")}`
        uncovered.set(k, (uncovered.get(k) ?? 0) + 1)
        continue
      }
      checked++
      const where = `${x.method} ${template} → ${x.status}`
      const response = op.responses[String(x.status)] ?? op.responses.default
      const schema = response?.content?.["application/json"]?.schema
      if (schema === undefined) problems.push(`${where}: status not in the description`)
      else {
        let body: unknown
        try {
          body = JSON.parse(x.responseBody)
        } catch {
          problems.push(`${where}: response is not JSON`)
        }
        const v = compile(responses, `res ${x.method} ${template} ${x.status in op.responses ? x.status : "default"}`, schema)
        if (body !== undefined && !v(body)) {
          for (const e of v.errors ?? []) problems.push(`${where}: response ${e.instancePath || "/"} ${e.message}`)
        }
      }
      // Requests: form body (POST) and query parameters (GET).
      const form = op.requestBody?.content["application/x-www-form-urlencoded"]?.schema
      if (x.method === "POST" && form !== undefined && x.requestContentType.startsWith("application/x-www-form-urlencoded")) {
        const v = compile(requests, `req ${x.method} ${template}`, form)
        if (!v(structuredClone(decodeForm(x.requestBody)))) {
          for (const e of v.errors ?? []) problems.push(`${where}: request body ${e.instancePath || "/"} ${e.message}`)
        }
      }
      if (x.query !== "") {
        const q = decodeForm(x.query) as Record<string, unknown>
        for (const p of op.parameters ?? []) {
          if (p.in !== "query" || q[p.name] === undefined) continue
          const v = compile(requests, `query ${x.method} ${template} ${p.name}`, p.schema)
          const holder = { value: structuredClone(q[p.name]) }
          if (!v(holder.value)) for (const e of v.errors ?? []) problems.push(`${where}: query ${p.name}${e.instancePath} ${e.message}`)
        }
      }
    }
    // Which exchanges the vendored description cannot check (paths newer than it).
    console.info(
      `conformance: ${checked} exchanges checked against Stripe OpenAPI ${spec.info.version}; not in the description: ` +
        JSON.stringify(Object.fromEntries(uncovered))
    )
    expect(checked).toBeGreaterThan(50)
    expect([...new Set(problems)]).toEqual([])
    }
  )
})

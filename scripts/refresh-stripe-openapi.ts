/**
 * Re-extracts the part of Stripe's official OpenAPI description the emulator conformance test
 * needs: the paths the emulator serves that the description has, and every component schema they
 * reach. Descriptions are dropped to keep the fixture small; nothing else is changed.
 *
 *   npx tsx scripts/refresh-stripe-openapi.ts <checkout of github.com/stripe/openapi> [commit] [output]
 *
 * Reads `<checkout>/openapi/spec3.json` and writes `output` (default
 * ../shared/stripe-openapi/spec3.subset.json, beside the repository: the extract is not committed;
 * the conformance test reads FLEXPRICE_STRIPE_OPENAPI or that default).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"

/** Every route the emulator serves (OpenAPI path templates, as Stripe names the parameters). */
export const EMULATOR_PATHS = [
  "/v1/account",
  "/v1/customers",
  "/v1/customers/{customer}",
  "/v1/billing/meters",
  "/v1/billing/meters/{id}",
  "/v1/billing/meters/{id}/deactivate",
  "/v1/billing/meters/{id}/reactivate",
  "/v1/billing/meters/{id}/event_summaries",
  "/v1/billing/meter_events",
  "/v1/events",
  "/v1/events/{id}",
  "/v2/billing/meter_event_session",
  "/v2/billing/meter_event_stream",
  "/v2/core/events/{id}"
]

type Json = null | boolean | number | string | Array<Json> | { [k: string]: Json }

const strip = (node: Json): Json => {
  if (Array.isArray(node)) return node.map(strip)
  if (node !== null && typeof node === "object") {
    const out: { [k: string]: Json } = {}
    for (const [k, v] of Object.entries(node)) if (k !== "description") out[k] = strip(v)
    return out
  }
  return node
}

const main = () => {
  const [checkout, commit = "unknown", output = join("..", "shared", "stripe-openapi", "spec3.subset.json")] = process.argv.slice(2)
  if (!checkout) throw new Error("usage: refresh-stripe-openapi.ts <stripe/openapi checkout> [commit] [output]")
  const spec = JSON.parse(readFileSync(join(checkout, "openapi", "spec3.json"), "utf8")) as {
    openapi: string
    info: { version: string }
    paths: Record<string, Json>
    components: { schemas: Record<string, Json> }
  }
  const seen = new Set<string>()
  const queue: Array<string> = []
  const walk = (node: Json): void => {
    if (Array.isArray(node)) node.forEach(walk)
    else if (node !== null && typeof node === "object") {
      for (const [k, v] of Object.entries(node)) {
        if (k === "$ref" && typeof v === "string") {
          const name = v.split("/").pop()!
          if (!seen.has(name)) {
            seen.add(name)
            queue.push(name)
          }
        } else walk(v)
      }
    }
  }
  const paths: Record<string, Json> = {}
  const missing: Array<string> = []
  for (const p of EMULATOR_PATHS) {
    if (spec.paths[p] === undefined) missing.push(p)
    else {
      paths[p] = spec.paths[p]!
      walk(spec.paths[p]!)
    }
  }
  while (queue.length > 0) walk(spec.components.schemas[queue.shift()!]!)
  const schemas: Record<string, Json> = {}
  for (const name of [...seen].sort()) schemas[name] = spec.components.schemas[name]!
  const out = {
    openapi: spec.openapi,
    info: { version: spec.info.version, "x-source": `github.com/stripe/openapi openapi/spec3.json @ ${commit}` },
    "x-paths-not-in-source": missing,
    paths: strip(paths as Json),
    components: { schemas: strip(schemas as Json) }
  }
  mkdirSync(dirname(output), { recursive: true })
  writeFileSync(output, JSON.stringify(out) + "\n")
  process.stdout.write(`${Object.keys(paths).length} paths, ${seen.size} schemas; not in source: ${missing.join(", ") || "none"}\n`)
}

main()

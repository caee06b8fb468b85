/**
 * Fields the requirements named but migrations/0010 dropped (always empty: a meter event has no
 * id of its own, webhook and mapping settings are their own columns) are documented nowhere as
 * fields the API answers: `stripe_event_id` exists only on the webhook event log, where it is
 * the delivered event's id.
 */
import * as fs from "node:fs"
import { describe, expect, it } from "vitest"

const DROPPED = ["webhook_config", "configuration"]

/** Every (schema path, property name) in the document. */
const properties = (node: unknown, path: string, out: Array<{ path: string; name: string }>) => {
  if (Array.isArray(node)) node.forEach((n, i) => properties(n, `${path}/${i}`, out))
  else if (node !== null && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      if (k === "properties" && v !== null && typeof v === "object") for (const name of Object.keys(v)) out.push({ path, name })
      properties(v, `${path}/${k}`, out)
    }
  }
  return out
}

describe("dropped fields (migrations/0010)", () => {
  const doc = JSON.parse(fs.readFileSync(new URL("../../openapi.json", import.meta.url), "utf8")) as unknown
  const all = properties(doc, "", [])

  it("openapi.json describes no webhook_config or mapping configuration", () => {
    expect(all.length).toBeGreaterThan(100)
    expect(all.filter((p) => DROPPED.includes(p.name))).toEqual([])
  })

  it("stripe_event_id is a property of the webhook event log only", () => {
    const places = all.filter((p) => p.name === "stripe_event_id").map((p) => p.path)
    expect(places.length).toBeGreaterThan(0)
    for (const p of places) expect(p).toMatch(/^\/paths\/\/v1\/stripe\/webhook-events\//)
  })

  it("README names them only where it says they were dropped", () => {
    const readme = fs.readFileSync(new URL("../../README.md", import.meta.url), "utf8")
    // list items and paragraphs
    const parts = readme.split(/\n(?=\s*\n|- )/).filter((l) => /webhook_config|`configuration`|stripe_event_id/.test(l))
    expect(parts.length).toBeGreaterThan(0)
    for (const l of parts) expect(l).toMatch(/dropped \(migrations\/0010\)/)
  })
})

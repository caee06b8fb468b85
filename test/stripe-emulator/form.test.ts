import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { decodeForm, encodeForm } from "../../src/stripe-emulator/form.js"

describe("form decoding (Stripe v1 nested brackets)", () => {
  it("decodes nested objects, percent-encoding and plus signs", () => {
    const body =
      "name=Jane+Doe&metadata%5Bexternal_id%5D=ext%2F1&metadata[plan]=a%26b&default_aggregation[formula]=sum" +
      "&customer_mapping[event_payload_key]=stripe_customer_id&payload[value]=5"
    expect(decodeForm(body)).toEqual({
      name: "Jane Doe",
      metadata: { external_id: "ext/1", plan: "a&b" },
      default_aggregation: { formula: "sum" },
      customer_mapping: { event_payload_key: "stripe_customer_id" },
      payload: { value: "5" }
    })
  })

  it("turns index-keyed objects into arrays and appends `[]` entries", () => {
    expect(decodeForm("expand[0]=a&expand[1]=b&tags[]=x&tags[]=y&items[0][price]=p1&items[1][price]=p2")).toEqual({
      expand: ["a", "b"],
      tags: ["x", "y"],
      items: [{ price: "p1" }, { price: "p2" }]
    })
  })

  it("ignores keys that would reach Object.prototype, and malformed brackets", () => {
    const decoded = decodeForm("__proto__[polluted]=1&a[constructor][x]=2&b[c=3&ok=1")
    expect(decoded).toEqual({ ok: "1" })
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it("round-trips what encodeForm (stripe-node's encoding) produces", () => {
    const key = fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !/[[\]]/.test(k) && !["__proto__", "constructor", "prototype"].includes(k))
    fc.assert(
      fc.property(
        fc.dictionary(key, fc.oneof(fc.string(), fc.dictionary(key, fc.string(), { maxKeys: 4 })), { maxKeys: 5 }),
        (value) => {
          // Empty nested objects vanish on the wire (nothing to encode), as with qs.
          const expected = Object.fromEntries(
            Object.entries(value).filter(([, v]) => typeof v === "string" || Object.keys(v).length > 0)
          )
          expect(decodeForm(encodeForm(value))).toEqual(
            JSON.parse(JSON.stringify(expected, (_k, v) => (v && typeof v === "object" && Object.keys(v).every((k, i) => k === String(i)) && Object.keys(v).length > 0 ? Object.values(v) : v)))
          )
        }
      ),
      { numRuns: 200 }
    )
  })
})

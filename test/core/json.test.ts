/** The exact-number JSON codec: numbers keep their literal text; everything else round-trips. */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { JsonNumber, parseJson, stringifyJson } from "../../src/domain/Json.js"

describe("parseJson / stringifyJson", () => {
  it("keeps number literals exactly as written", () => {
    const text = '{"a":0.1,"b":[1e3,-2.50],"c":12345678901234567890.123456789}'
    expect(stringifyJson(parseJson(text))).toBe(text)
  })

  it("round-trips any JSON document (property)", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = JSON.stringify(v)
        expect(JSON.parse(stringifyJson(parseJson(text)))).toEqual(JSON.parse(text))
      }),
      { numRuns: 300 }
    )
  })

  it("never turns a user string into a number, even one shaped like the internal marker", () => {
    const tricky = "\u0000Nabc:5"
    const out = JSON.parse(stringifyJson({ s: tricky, n: new JsonNumber("7.25") }))
    expect(out).toEqual({ s: tricky, n: 7.25 })
  })

  it("rejects malformed input with its position", () => {
    expect(() => parseJson('{"a":}')).toThrow(/position 5/)
    expect(() => parseJson("[1,2")).toThrow(/invalid JSON/)
  })
})

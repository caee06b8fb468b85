/** The exact-number JSON codec: numbers keep their literal text; everything else round-trips. */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { JsonNumber, parseJson, stringifyJson } from "../../src/domain/Json.js"

describe("parseJson / stringifyJson", () => {
  it("keeps number literals exactly as written", () => {
    const text = '{"a":0.1,"b":[1e3,-2.50],"c":12345678901234567890.123456789}'
    expect(stringifyJson(parseJson(text))).toBe(text)
  })

  it("round-trips any JSON document literally (property)", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = JSON.stringify(v)
        expect(stringifyJson(parseJson(text))).toBe(text)
      }),
      { numRuns: 300 }
    )
  })

  // Number literals of the JSON grammar (RFC 8259 §6), far beyond what a double holds exactly.
  const digits = (min: number, max: number) => fc.stringMatching(new RegExp(`^\\d{${min},${max}}$`))
  const numberLiteral = fc
    .tuple(
      fc.boolean(),
      fc.oneof(fc.constant("0"), fc.tuple(fc.integer({ min: 1, max: 9 }), digits(0, 25)).map(([d, r]) => `${d}${r}`)),
      fc.option(digits(1, 20), { nil: undefined }),
      fc.option(fc.tuple(fc.constantFrom("e", "E"), fc.constantFrom("", "+", "-"), digits(1, 3)), { nil: undefined })
    )
    .map(([neg, int, frac, exp]) => `${neg ? "-" : ""}${int}${frac === undefined ? "" : `.${frac}`}${exp === undefined ? "" : exp.join("")}`)
  // JSON objects are unordered (RFC 8259 §4) and JS objects list integer-like keys first, so
  // those keys would move; every other key keeps its place.
  const key = fc.oneof(fc.string(), fc.constant("__proto__")).filter((k) => !/^(0|[1-9]\d*)$/.test(k))
  /** A document as text, built from literals, and the number literals in document order. */
  const { doc } = fc.letrec<{ doc: [string, Array<string>] }>((tie) => ({
    doc: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      numberLiteral.map((n): [string, Array<string>] => [n, [n]]),
      fc.string().map((s): [string, Array<string>] => [JSON.stringify(s), []]),
      fc.constantFrom<[string, Array<string>]>(["true", []], ["false", []], ["null", []]),
      fc.array(tie("doc"), { maxLength: 4 }).map((xs): [string, Array<string>] => [`[${xs.map((x) => x[0]).join(",")}]`, xs.flatMap((x) => x[1])]),
      fc
        .uniqueArray(fc.tuple(key, tie("doc")), { maxLength: 4, selector: ([k]) => k })
        .map((kv): [string, Array<string>] => [`{${kv.map(([k, x]) => `${JSON.stringify(k)}:${x[0]}`).join(",")}}`, kv.flatMap(([, x]) => x[1])])
    )
  }))
  const numbersOf = (v: unknown): Array<string> =>
    v instanceof JsonNumber ? [v.raw] : Array.isArray(v) ? v.flatMap(numbersOf) : typeof v === "object" && v !== null ? Object.values(v).flatMap(numbersOf) : []

  it("keeps every number literal of any document verbatim, and writes the document back byte for byte (property)", () => {
    fc.assert(
      fc.property(doc, ([text, literals]) => {
        const parsed = parseJson(text)
        expect(numbersOf(parsed)).toEqual(literals)
        expect(stringifyJson(parsed)).toBe(text)
      }),
      { numRuns: 300 }
    )
  })

  it("refuses number literals outside the JSON grammar", () => {
    for (const bad of ["01", "+1", ".5", "5.", "1e", "1e+", "-", "--1", "0x1", "NaN", "Infinity", "1.e5", "1_0"]) {
      expect(() => parseJson(`[${bad}]`), bad).toThrow(/invalid JSON/)
    }
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

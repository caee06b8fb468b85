/**
 * A JSON parser that keeps numbers as their source text. `JSON.parse` turns `0.1` into a binary
 * float; billing needs the exact digits the client sent, so numbers become `JsonNumber` values
 * holding the literal, and `stringifyJson` writes them back unchanged.
 */
import { randomBytes } from "node:crypto"

export class JsonNumber {
  constructor(readonly raw: string) {}
}

export type JsonValue = null | boolean | string | JsonNumber | ReadonlyArray<JsonValue> | { readonly [k: string]: JsonValue }

export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly position: number
  ) {
    super(message)
  }
}

const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const WS = new Set([0x20, 0x0a, 0x0d, 0x09])

export const parseJson = (text: string, maxDepth = 64): JsonValue => {
  let i = 0
  const fail = (msg: string): never => {
    throw new JsonSyntaxError(`invalid JSON at position ${i}: ${msg}`, i)
  }
  const ws = () => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++
  }
  const str = (): string => {
    // fast path: no escapes
    const start = ++i
    let j = start
    while (j < text.length) {
      const c = text.charCodeAt(j)
      if (c === 0x22) {
        i = j + 1
        return text.slice(start, j)
      }
      if (c === 0x5c || c < 0x20) break
      j++
    }
    // slow path: find the end honouring escapes, then let JSON.parse decode the literal
    j = start
    while (j < text.length) {
      const c = text.charCodeAt(j)
      if (c === 0x5c) j += 2
      else if (c === 0x22) break
      else if (c < 0x20) {
        i = j
        fail("control character in string")
      } else j++
    }
    if (j >= text.length) fail("unterminated string")
    try {
      const s = JSON.parse(text.slice(start - 1, j + 1)) as string
      i = j + 1
      return s
    } catch {
      return fail("bad escape in string")
    }
  }
  const value = (depth: number): JsonValue => {
    if (depth > maxDepth) fail("nesting too deep")
    ws()
    const c = text[i]
    switch (c) {
      case "{": {
        i++
        const obj: Record<string, JsonValue> = {}
        ws()
        if (text[i] === "}") {
          i++
          return obj
        }
        for (;;) {
          ws()
          if (text[i] !== '"') fail("expected a property name")
          const key = str()
          ws()
          if (text[i] !== ":") fail("expected ':'")
          i++
          const v = value(depth + 1)
          if (key === "__proto__") Object.defineProperty(obj, key, { value: v, enumerable: true, writable: true, configurable: true })
          else obj[key] = v
          ws()
          if (text[i] === ",") {
            i++
            continue
          }
          if (text[i] === "}") {
            i++
            return obj
          }
          fail("expected ',' or '}'")
        }
      }
      case "[": {
        i++
        const arr: Array<JsonValue> = []
        ws()
        if (text[i] === "]") {
          i++
          return arr
        }
        for (;;) {
          arr.push(value(depth + 1))
          ws()
          if (text[i] === ",") {
            i++
            continue
          }
          if (text[i] === "]") {
            i++
            return arr
          }
          fail("expected ',' or ']'")
        }
      }
      case '"':
        return str()
      case "t":
        if (text.startsWith("true", i)) {
          i += 4
          return true
        }
        return fail("unexpected token")
      case "f":
        if (text.startsWith("false", i)) {
          i += 5
          return false
        }
        return fail("unexpected token")
      case "n":
        if (text.startsWith("null", i)) {
          i += 4
          return null
        }
        return fail("unexpected token")
      default: {
        NUMBER_RE.lastIndex = i
        const m = NUMBER_RE.exec(text)
        if (!m) return fail(c === undefined ? "unexpected end of input" : "unexpected token")
        i += m[0].length
        return new JsonNumber(m[0])
      }
    }
  }
  const v = value(0)
  ws()
  if (i !== text.length) fail("unexpected data after the JSON value")
  return v
}

/**
 * Marks a JsonNumber's place in JSON.stringify's output. The random part keeps user strings
 * (which could contain NUL) from ever being mistaken for a marker.
 */
const MARK = `\u0000N${randomBytes(6).toString("hex")}:`
const MARKED = new RegExp(`"\\\\u0000N${MARK.slice(2)}([^"]*)"`, "g")

/**
 * JSON text of plain data (null, booleans, strings, JsonNumbers, arrays, plain objects), written
 * as JSON.stringify writes it; undefined when `v` holds anything else (a JS number, a Date, …).
 * An event's properties are plain data, and this walk costs a fraction of a replacer call per key.
 */
const plainText = (v: unknown): string | undefined => {
  if (typeof v === "string") return JSON.stringify(v)
  if (v instanceof JsonNumber) return v.raw
  if (v === null) return "null"
  if (typeof v === "boolean") return v ? "true" : "false"
  if (Array.isArray(v)) {
    const parts: Array<string> = []
    for (const x of v) {
      const t = plainText(x)
      if (t === undefined) return undefined
      parts.push(t)
    }
    return `[${parts.join(",")}]`
  }
  if (typeof v !== "object" || Object.getPrototypeOf(v) !== Object.prototype) return undefined
  const o = v as Record<string, unknown>
  const parts: Array<string> = []
  for (const k of Object.keys(o)) {
    const t = plainText(o[k])
    if (t === undefined) return undefined
    parts.push(`${JSON.stringify(k)}:${t}`)
  }
  return `{${parts.join(",")}}`
}

/** Serialise, writing JsonNumber literals verbatim. */
export const stringifyJson = (v: unknown): string => {
  const plain = plainText(v)
  if (plain !== undefined) return plain
  let numbers = false
  const text = JSON.stringify(v, (_k, x) => {
    if (!(x instanceof JsonNumber)) return x
    numbers = true
    return `${MARK}${x.raw}`
  })
  return numbers ? text.replace(MARKED, "$1") : text
}

export const isJsonObject = (v: unknown): v is { readonly [k: string]: JsonValue } =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof JsonNumber)

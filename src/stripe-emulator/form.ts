/**
 * Stripe's v1 wire format: `application/x-www-form-urlencoded` with nested brackets
 * (`metadata[external_id]=x`, `expand[0]=a`). stripe-node encodes with qs `arrayFormat: indices`,
 * so arrays arrive as objects keyed "0".."n-1"; those are turned back into arrays.
 */

export type FormValue = string | FormObject | ReadonlyArray<FormValue>
export interface FormObject {
  readonly [key: string]: FormValue
}

// Keys that would let a request body reach Object.prototype.
const FORBIDDEN = new Set(["__proto__", "prototype", "constructor"])

const splitKey = (key: string): Array<string> | undefined => {
  const open = key.indexOf("[")
  if (open < 0) return [key]
  const head = key.slice(0, open)
  const path = [head]
  let rest = key.slice(open)
  while (rest.length > 0) {
    if (rest[0] !== "[") return undefined
    // Brackets inside a segment nest (`metadata[a[1]]` is the key "a[1]").
    let depth = 0
    let close = -1
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === "[") depth++
      else if (rest[i] === "]" && --depth === 0) {
        close = i
        break
      }
    }
    if (close < 0) return undefined
    path.push(rest.slice(1, close))
    rest = rest.slice(close + 1)
  }
  return path
}

type Mutable = { [key: string]: string | Mutable }

const arrayify = (value: string | Mutable): FormValue => {
  if (typeof value === "string") return value
  const keys = Object.keys(value)
  const converted: Record<string, FormValue> = {}
  for (const k of keys) converted[k] = arrayify(value[k]!)
  if (keys.length > 0 && keys.every((k, i) => k === String(i))) {
    return keys.map((k) => converted[k]!)
  }
  return converted
}

/** Decodes a form body (or query string) into a nested object. Malformed keys are ignored. */
export const decodeForm = (body: string | URLSearchParams): FormObject => {
  const params = typeof body === "string" ? new URLSearchParams(body) : body
  const root: Mutable = {}
  for (const [rawKey, value] of params) {
    const path = splitKey(rawKey)
    if (!path || path.some((p) => FORBIDDEN.has(p))) continue
    let node: Mutable = root
    for (let i = 0; i < path.length; i++) {
      let seg = path[i]!
      const last = i === path.length - 1
      if (seg === "") {
        // `a[]=x` appends.
        seg = String(Object.keys(node).length)
      }
      if (last) {
        node[seg] = value
      } else {
        const next = node[seg]
        if (typeof next === "object") {
          node = next
        } else {
          const created: Mutable = {}
          node[seg] = created
          node = created
        }
      }
    }
  }
  return arrayify(root) as FormObject
}

/** Encodes a nested object the way stripe-node does (for tests and tools). */
export const encodeForm = (value: Record<string, unknown>): string => {
  const out: Array<string> = []
  const walk = (prefix: string, v: unknown): void => {
    if (v === undefined) return
    if (v === null) {
      out.push(`${encodeURIComponent(prefix)}=`)
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => walk(`${prefix}[${i}]`, item))
    } else if (typeof v === "object") {
      for (const [k, item] of Object.entries(v as Record<string, unknown>)) walk(`${prefix}[${k}]`, item)
    } else {
      out.push(`${encodeURIComponent(prefix)}=${encodeURIComponent(String(v))}`)
    }
  }
  for (const [k, v] of Object.entries(value)) walk(k, v)
  return out.join("&")
}

/** A string field, if present as a string. */
export const str = (obj: FormObject | undefined, key: string): string | undefined => {
  const v = obj?.[key]
  return typeof v === "string" ? v : undefined
}

/** An object field, if present as an object (not array). */
export const obj = (o: FormObject | undefined, key: string): FormObject | undefined => {
  const v = o?.[key]
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as FormObject) : undefined
}

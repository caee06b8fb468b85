/**
 * Text the storage can keep exactly. PostgreSQL refuses NUL in `text` (a data error that used
 * to surface as 503 "retry later"), and a lone UTF-16 surrogate cannot be encoded in UTF-8: the
 * driver writes U+FFFD instead, so two different ids silently became one. Both are refused at the
 * edge, with the field that holds them.
 */

/** Why `s` cannot be stored as sent, or null when it can. */
export const textProblem = (s: string): string | null => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0) return "contains a NUL character"
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0
      if (next >= 0xdc00 && next <= 0xdfff) i++
      else return "contains an unpaired UTF-16 surrogate"
    } else if (c >= 0xdc00 && c <= 0xdfff) return "contains an unpaired UTF-16 surrogate"
  }
  return null
}

/** The first field (as a path) of a parsed JSON value whose key or string cannot be stored. */
export const findBadText = (
  value: unknown,
  root: string,
  maxDepth = 64
): { readonly field: string; readonly problem: string } | { readonly field: string; readonly problem: "too_deep" } | null => {
  // iterative: a hostile body may nest deeper than the stack
  const stack: Array<{ v: unknown; path: string; depth: number }> = [{ v: value, path: root, depth: 0 }]
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop()!
    if (typeof v === "string") {
      const p = textProblem(v)
      if (p !== null) return { field: path, problem: p }
    } else if (typeof v === "object" && v !== null) {
      if (depth >= maxDepth) return { field: path, problem: "too_deep" }
      if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, path: `${path}[${i}]`, depth: depth + 1 }))
      else
        for (const [k, x] of Object.entries(v)) {
          const p = textProblem(k)
          const child = path === "" ? safeKey(k) : `${path}.${safeKey(k)}`
          if (p !== null) return { field: child, problem: `key ${p}` }
          stack.push({ v: x, path: child, depth: depth + 1 })
        }
    }
  }
  return null
}

/** A key as it may appear in an error message: bad characters escaped, length bounded. */
export const safeKey = (k: string): string => JSON.stringify(k.slice(0, 100)).slice(1, -1)

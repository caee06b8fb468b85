/**
 * The result/query name conversions are memoized (src/db/Database.ts): the memoized function
 * must answer exactly what the conversion answers, for repeated names and past its cache cap,
 * and convert each distinct name once while the cache has room.
 */
import { String as Str } from "effect"
import { describe, expect, it } from "vitest"
import { memoizeName } from "../../src/db/Database.js"

describe("memoizeName", () => {
  it("answers what the conversion answers, converting each distinct name once", () => {
    const seen: Array<string> = []
    const f = memoizeName((n) => {
      seen.push(n)
      return Str.snakeToCamel(n)
    })
    const names = ["window_start", "sync_status", "id", "first_sent_at", "a__b", "_x", ""]
    for (let round = 0; round < 3; round++) for (const n of names) expect(f(n)).toBe(Str.snakeToCamel(n))
    expect(seen).toEqual(names)
  })

  it("stays correct past its cap (converts again instead of caching)", () => {
    let calls = 0
    const f = memoizeName((n) => {
      calls++
      return Str.camelToSnake(n)
    }, 2)
    const names = ["windowStart", "syncStatus", "firstSentAt", "providerMeterId"]
    for (let round = 0; round < 2; round++) for (const n of names) expect(f(n)).toBe(Str.camelToSnake(n))
    // the first two are cached, the last two converted on every call
    expect(calls).toBe(2 + 2 * 2)
  })
})

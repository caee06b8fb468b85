/**
 * The one escaping function (src/events/clickhouse/escape.ts): unit tests, and a fast-check
 * property against the real server that an escaped literal reads back as exactly the input.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Scope, Exit } from "effect"
import fc from "fast-check"
import { makeClient, resolveConnection, type ChClient } from "../../src/events/clickhouse/Client.js"
import {
  dateTimeFloor,
  epochMs,
  identifier,
  literal,
  Sql,
  sql,
  tsvDateTime,
  tsvDecimal,
  tsvLine,
  tsvString,
  UnsafeValue
} from "../../src/events/clickhouse/escape.js"
import { withClickHouse } from "../support/clickhouse.js"

describe("ClickHouse escaping (pure)", () => {
  it("leaves safe ids as they are and escapes the rest", () => {
    expect(literal("tnt_abc-1.2:3")).toBe("'tnt_abc-1.2:3'")
    expect(literal("it's")).toBe("'it\\'s'")
    expect(literal("a\\b")).toBe("'a\\\\b'")
    expect(literal("x\ny\tz\0")).toBe("'x\\ny\\tz\\0'")
    expect(literal("' OR 1=1 --")).toBe("'\\' OR 1=1 --'")
  })
  it("formats integers, lists and fragments; refuses what it cannot represent", () => {
    expect(literal(42)).toBe("42")
    expect(literal(2n ** 63n)).toBe("9223372036854775808")
    expect(literal(["a", "b'"])).toBe("('a', 'b\\'')")
    expect(literal(new Sql("now()"))).toBe("now()")
    expect(() => literal(0.1)).toThrow(UnsafeValue)
    expect(() => literal(Number.MAX_SAFE_INTEGER + 1)).toThrow(UnsafeValue)
    expect(() => literal([])).toThrow(UnsafeValue)
    expect(() => literal("\uD800")).toThrow(UnsafeValue)
    expect(() => literal("a\uDC00b")).toThrow(UnsafeValue)
    expect(literal("\uD83D\uDE00")).toBe("'\uD83D\uDE00'")
  })
  it("sql`` routes every interpolation through literal", () => {
    const id = "x' OR '1'='1"
    expect(sql`SELECT 1 WHERE a = ${id} AND b IN ${["p", "q"]} AND c = ${7}`.text).toBe(
      "SELECT 1 WHERE a = 'x\\' OR \\'1\\'=\\'1' AND b IN ('p', 'q') AND c = 7"
    )
  })
  it("identifiers are validated, not escaped", () => {
    expect(identifier("flexprice_test").text).toBe("flexprice_test")
    expect(() => identifier("x; DROP DATABASE y")).toThrow(UnsafeValue)
    expect(() => identifier("1abc")).toThrow(UnsafeValue)
  })
  it("instants: DateTime range only, whole-second floor for the coarse filter", () => {
    expect(epochMs(new Date("2025-01-01T00:00:00.999Z"))).toBe(1735689600999)
    expect(dateTimeFloor(new Date("2025-01-01T00:00:00.999Z")).text).toBe("toDateTime(1735689600)")
    expect(tsvDateTime(new Date("2025-01-01T12:34:56.789Z"))).toBe("2025-01-01 12:34:56")
    expect(() => epochMs(new Date(-1))).toThrow(UnsafeValue)
    expect(() => epochMs(new Date("2106-03-01T00:00:00Z"))).toThrow(UnsafeValue)
    expect(() => epochMs(new Date(NaN))).toThrow(UnsafeValue)
  })
  it("TSV fields: escapes separators, keeps decimals exact", () => {
    expect(tsvString("a\tb\nc\\d\re")).toBe("a\\tb\\nc\\\\d\\re")
    expect(tsvLine(["a", "b"])).toBe("a\tb\n")
    expect(tsvDecimal("0.1")).toBe("0.1")
    expect(tsvDecimal("1e3")).toBe("1000")
    expect(tsvDecimal("-0.000000000001")).toBe("-0.000000000001")
    expect(tsvDecimal("00012.5000")).toBe("12.5")
    expect(tsvDecimal("99999999999999999999999999.999999999999")).toBe("99999999999999999999999999.999999999999")
    expect(() => tsvDecimal("0.0000000000001")).toThrow(UnsafeValue)
    expect(() => tsvDecimal("100000000000000000000000000")).toThrow(UnsafeValue)
    expect(() => tsvDecimal("1; DROP")).toThrow(UnsafeValue)
    expect(() => tsvDecimal("NaN")).toThrow(UnsafeValue)
  })
})

const utf8Hex = (s: string) => Buffer.from(s, "utf8").toString("hex").toUpperCase()

// Full Unicode (no lone surrogates: those are refused above), weighted towards the characters
// that matter to the escaper.
const nasty = fc.constantFrom("'", "\\", "\0", "\n", "\r", "\t", "\b", "\f", "\"", "`", "?", "{", "}", ";", "--", "/*", "\\'", "\u2028")
const arbitraryText = fc
  .array(fc.oneof(fc.string({ unit: "binary", maxLength: 8 }), nasty), { maxLength: 12 })
  .map((parts) => parts.join(""))

withClickHouse((url) => {
  describe("ClickHouse escaping against the server", () => {
    const withClient = <A>(f: (ch: ChClient) => Promise<A>) =>
      Effect.runPromise(
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const ch = yield* makeClient(resolveConnection({ url }), "default").pipe(Scope.extend(scope))
          return yield* Effect.promise(() => f(ch)).pipe(Effect.ensuring(Scope.close(scope, Exit.void)))
        })
      )

    it("an escaped literal reads back as exactly the input (fast-check)", () =>
      withClient(async (ch) => {
        await fc.assert(
          fc.asyncProperty(fc.array(arbitraryText, { minLength: 1, maxLength: 20 }), async (inputs) => {
            const select = inputs.map((s, i) => sql`hex(${s}) AS h${new Sql(String(i))}`.text).join(", ")
            const rows = await Effect.runPromise(ch.query("escape-test", new Sql(`SELECT ${select}`)))
            inputs.forEach((s, i) => expect(rows[0]![`h${i}`]).toBe(utf8Hex(s)))
          }),
          { numRuns: 150 }
        )
      }))

    it("a TSV-encoded string stores exactly the input (fast-check)", () =>
      withClient(async (ch) => {
        const table = `escape_tsv_${process.pid}_${Date.now()}`
        const run = <A>(e: Effect.Effect<A, unknown>) => Effect.runPromise(e)
        await run(ch.command("t", new Sql(`CREATE TABLE ${table} (i UInt32, s String) ENGINE = Memory`)))
        try {
          let n = 0
          await fc.assert(
            fc.asyncProperty(fc.array(arbitraryText, { minLength: 1, maxLength: 20 }), async (inputs) => {
              const base = n
              n += inputs.length
              await run(ch.insertTsv("t", table, ["i", "s"], inputs.map((s, i) => tsvLine([String(base + i), tsvString(s)])).join("")))
              const rows = await run(ch.query("t", sql`SELECT i, hex(s) AS h FROM ${identifier(table)} WHERE i >= ${base} ORDER BY i`))
              expect(rows.map((r) => r["h"])).toEqual(inputs.map(utf8Hex))
            }),
            { numRuns: 100 }
          )
        } finally {
          await run(ch.command("t", new Sql(`DROP TABLE IF EXISTS ${table}`)))
        }
      }))

    it("an injection attempt stays a string", () =>
      withClient(async (ch) => {
        const evil = "x' UNION SELECT name FROM system.tables --"
        const rows = await Effect.runPromise(ch.query("t", sql`SELECT ${evil} AS v`))
        expect(rows).toEqual([{ v: evil }])
      }))
  })
})

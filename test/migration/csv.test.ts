/**
 * The CSV reader (property-tested against a writer: quoted fields, embedded separators, quotes
 * and line breaks, CRLF/LF, BOM, missing final line break) and the mapping file checks with
 * their line numbers.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { formatCsvField, parseCsv } from "../../src/migration/Csv.js"
import { parseCsvMapping } from "../../src/migration/CsvMapping.js"

const fieldChars = fc.constantFrom("a", "b", "Z", "0", " ", ",", '"', "\n", "\r", "\r\n", "é", "€", "\t", ";")
const field = fc.array(fieldChars, { maxLength: 8 }).map((cs) => cs.join(""))
const record = fc.array(field, { minLength: 1, maxLength: 5 })

/** A writer that quotes when needed, sometimes when not needed, and never emits a blank line for a record. */
const write = (rows: ReadonlyArray<ReadonlyArray<string>>, eol: string, quoteAll: boolean) =>
  rows.map((r) =>
    r
      .map((f) => (quoteAll || (r.length === 1 && f === "") ? `"${f.replace(/"/g, '""')}"` : formatCsvField(f)))
      .join(",")
  )

const countBreaks = (s: string) => (s.match(/\r\n|\r|\n/g) ?? []).length

describe("parseCsv", () => {
  it("reads back what an RFC 4180 writer wrote, with the line each record starts on", () => {
    fc.assert(
      fc.property(
        fc.array(record, { minLength: 1, maxLength: 12 }),
        fc.constantFrom("\n", "\r\n"),
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        (rows, eol, bom, trailing, quoteAll) => {
          const lines = write(rows, eol, quoteAll)
          const text = (bom ? "\uFEFF" : "") + lines.join(eol) + (trailing ? eol : "")
          const parsed = parseCsv(text)
          expect(parsed.errors).toEqual([])
          expect(parsed.records.map((r) => r.fields)).toEqual(rows)
          let line = 1
          const expectedLines = lines.map((l) => {
            const at = line
            line += countBreaks(l) + 1
            return at
          })
          expect(parsed.records.map((r) => r.line)).toEqual(expectedLines)
        }
      ),
      { numRuns: 500 }
    )
  })

  it("skips blank lines but counts them", () => {
    const parsed = parseCsv("a,b\r\n\r\n\nc,d\n")
    expect(parsed.records).toEqual([
      { line: 1, fields: ["a", "b"] },
      { line: 4, fields: ["c", "d"] }
    ])
  })

  it("reports a broken record with its line and keeps reading the next ones", () => {
    const parsed = parseCsv('h1,h2\nok,1\nbad"quote,2\n"x"y,3\nfine,4\n"never closed,5\nlost,6')
    expect(parsed.records.map((r) => [r.line, r.fields[0]])).toEqual([
      [1, "h1"],
      [2, "ok"],
      [5, "fine"]
    ])
    expect(parsed.errors.map((e) => e.line)).toEqual([3, 4, 6])
  })

  it("never throws and never loses a line on arbitrary input", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom("a", ",", '"', "\n", "\r", " ") }), (text) => {
        const parsed = parseCsv(text)
        const lines = [...parsed.records.map((r) => r.line), ...parsed.errors.map((e) => e.line)]
        for (const l of lines) expect(l).toBeGreaterThanOrEqual(1)
        for (const l of lines) expect(l).toBeLessThanOrEqual(countBreaks(text) + 1)
        expect(new Set(lines).size).toBe(lines.length)
      }),
      { numRuns: 500 }
    )
  })
})

describe("parseCsvMapping", () => {
  it("reports every bad row by line number and reason, and keeps the good ones", () => {
    const text = [
      "\uFEFFexternal_id,stripe_customer_id,name,email", // 1
      "u1,cus_A1,Alice,a@example.com", // 2
      ',cus_A2,"No, id",', // 3 missing external id
      "u3,,,", // 4 missing stripe id
      "u4,sub_123,,", // 5 not a customer id
      'u5,cus_A5,"two', // 6 (quoted name spans lines 6-7)
      'lines",e@example.com', // 7
      "u6,cus_A6", // 8 wrong field count
      "u7,cus_A7,,", // 9 duplicate external id (with line 10)
      "u7,cus_A8,,", // 10
      "u9,cus_A9,,", // 11 ok
      "u9,cus_A9,,", // 12 exact repeat: warning
      "u10,cus_A5,,", // 13 stripe id also on line 6 with another external id
      'u11,cus_B1,"bad"quote,' // 14 malformed
    ].join("\r\n")
    const result = parseCsvMapping(text)
    if (result._tag === "Left") throw new Error(result.left.message)
    const { rows, problems, totalRows } = result.right
    expect(totalRows).toBe(12)
    expect(rows.map((r) => [r.line, r.externalId, r.stripeCustomerId, r.name])).toEqual([
      [2, "u1", "cus_A1", "Alice"],
      [11, "u9", "cus_A9", null]
    ])
    expect(problems.map((p) => [p.line, p.code])).toEqual([
      [3, "missing_external_id"],
      [4, "missing_stripe_customer_id"],
      [5, "invalid_stripe_customer_id"],
      [6, "duplicate_stripe_customer_id"],
      [8, "wrong_field_count"],
      [9, "duplicate_external_id"],
      [10, "duplicate_external_id"],
      [12, "duplicate_row"],
      [13, "duplicate_stripe_customer_id"],
      [14, "malformed_csv"]
    ])
    expect(problems.find((p) => p.line === 9)?.reason).toContain("line 10")
  })

  it("accepts columns in any order and rejects bad headers", () => {
    const ok = parseCsvMapping("stripe_customer_id,External_ID\ncus_1,x\n")
    expect(ok._tag === "Right" && ok.right.rows).toEqual([{ line: 2, externalId: "x", stripeCustomerId: "cus_1", name: null, email: null }])
    const bad = (t: string) => {
      const r = parseCsvMapping(t)
      return r._tag === "Left" ? r.left.code : "ok"
    }
    expect(bad("")).toBe("empty_csv")
    expect(bad("\n\n")).toBe("empty_csv")
    expect(bad("external_id\nx\n")).toBe("invalid_csv_header")
    expect(bad("external_id,stripe_customer_id,plan\n")).toBe("invalid_csv_header")
    expect(bad("external_id,external_id,stripe_customer_id\n")).toBe("invalid_csv_header")
  })

  it("line numbers of generated files match where each row was written", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            ext: fc.oneof(fc.constant(""), fc.stringMatching(/^[a-z0-9-]{1,8}$/)),
            id: fc.oneof(fc.constant("sub_1"), fc.stringMatching(/^cus_[A-Za-z0-9]{1,6}$/)),
            name: fc.array(fc.constantFrom("a", ",", '"', "\n", "\r\n"), { maxLength: 4 }).map((x) => x.join(""))
          }),
          { maxLength: 30 }
        ),
        (rows) => {
          const lines = ["external_id,stripe_customer_id,name", ...rows.map((r) => [r.ext, r.id, r.name].map(formatCsvField).join(","))]
          const text = lines.join("\n") + "\n"
          const starts: Array<number> = []
          let line = 1
          for (const l of lines) {
            starts.push(line)
            line += countBreaks(l) + 1
          }
          const result = parseCsvMapping(text)
          if (result._tag === "Left") throw new Error(result.left.message)
          const seen = [...result.right.rows.map((r) => r.line), ...result.right.problems.map((p) => p.line)].sort((a, b) => a - b)
          expect(seen).toEqual(starts.slice(1))
          for (const p of result.right.problems) {
            const row = rows[starts.indexOf(p.line) - 1]!
            if (p.code === "missing_external_id") expect(row.ext).toBe("")
            if (p.code === "invalid_stripe_customer_id") expect(row.id).toBe("sub_1")
          }
        }
      ),
      { numRuns: 300 }
    )
  })
})

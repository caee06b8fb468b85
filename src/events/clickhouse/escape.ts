/**
 * The only place where values become ClickHouse text.
 *
 * ClickHouse 18.16 (Debian's package, SPEC §13) has no query parameters (`{name:Type}`), so every
 * value inside a query is inlined as a literal. `literal` is that one escaping function; `sql`
 * is a tagged template that routes every interpolation through it, so a query can never contain
 * an unescaped value by accident. Data sent with INSERT goes as TabSeparated (18.16 rejects quoted
 * decimals in JSONEachRow), encoded by the `tsv*` functions below.
 */
import { normalize, isDecimal, MAX_SCALE } from "../../domain/Decimal.js"

/** A fragment of SQL text that is already safe (built by `sql`, `identifier` or `join`). */
export class Sql {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text
  }
}

export type SqlValue = string | number | bigint | boolean | Sql | ReadonlyArray<SqlValue>

export class UnsafeValue extends Error {
  constructor(reason: string) {
    super(`value cannot be sent to ClickHouse: ${reason}`)
    this.name = "UnsafeValue"
  }
}

/** Ids this codebase generates or accepts: inlined verbatim (escaping them is the identity). */
export const SAFE_ID = /^[A-Za-z0-9_\-.:]+$/

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const STRING_ESCAPES: Record<string, string> = {
  "\\": "\\\\",
  "'": "\\'",
  "\0": "\\0",
  "\b": "\\b",
  "\f": "\\f",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t"
}

/**
 * THE escaping function: one value → one ClickHouse literal.
 * - string → `'...'` with backslash escapes for `\`, `'` and control characters. A string with a
 *   lone UTF-16 surrogate has no UTF-8 form and is refused rather than silently altered.
 * - number → only safe integers (quantities never travel as JS numbers).
 * - bigint → integer literal; boolean → 1/0.
 * - array → `(a, b, c)` for `IN` lists (empty arrays are refused: `IN ()` is a syntax error, callers
 *   must short-circuit instead).
 * - Sql → spliced as is (already safe by construction).
 */
export const literal = (value: SqlValue): string => {
  if (value instanceof Sql) return value.text
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw new UnsafeValue("string holds a lone UTF-16 surrogate")
    if (SAFE_ID.test(value)) return `'${value}'`
    return `'${value.replace(/[\\'\0\b\f\n\r\t]/g, (c) => STRING_ESCAPES[c]!)}'`
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new UnsafeValue(`not a safe integer: ${String(value)}`)
    return String(value)
  }
  if (typeof value === "bigint") return value.toString()
  if (typeof value === "boolean") return value ? "1" : "0"
  if (Array.isArray(value)) {
    if (value.length === 0) throw new UnsafeValue("empty list")
    return `(${value.map(literal).join(", ")})`
  }
  throw new UnsafeValue(`unsupported type ${typeof value}`)
}

/** Tagged template: `sql\`SELECT 1 WHERE id = ${id}\`` — every `${}` goes through `literal`. */
export const sql = (strings: TemplateStringsArray, ...values: ReadonlyArray<SqlValue>): Sql => {
  let text = strings[0] ?? ""
  for (let i = 0; i < values.length; i++) text += literal(values[i]!) + (strings[i + 1] ?? "")
  return new Sql(text)
}

/** Joins fragments (e.g. optional WHERE conditions). */
export const join = (parts: ReadonlyArray<Sql>, separator: string): Sql => new Sql(parts.map((p) => p.text).join(separator))

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/

/** A database/table name: validated, never escaped (we choose the names; a bad one is a bug or bad config). */
export const identifier = (name: string): Sql => {
  if (!IDENTIFIER.test(name)) throw new UnsafeValue(`not an identifier: ${JSON.stringify(name)}`)
  return new Sql(name)
}

export const isIdentifier = (name: string): boolean => IDENTIFIER.test(name)

// ---- instants -------------------------------------------------------------------------------

/** Upper bound of ClickHouse `DateTime` (UInt32 seconds), exclusive. */
const MAX_DATETIME_MS = 4294967295000

/**
 * Epoch milliseconds of a Date that a `DateTime` column can hold (1970 .. 2106). 18.16 has no
 * DateTime64, so instants are stored as `DateTime` (seconds, for partitioning and the sort key)
 * plus a `UInt64` epoch-millisecond column that carries the exact value.
 */
export const epochMs = (d: Date): number => {
  const ms = d.getTime()
  if (!Number.isSafeInteger(ms) || ms < 0 || ms >= MAX_DATETIME_MS) {
    throw new UnsafeValue(`instant outside 1970..2106: ${Number.isNaN(ms) ? "Invalid Date" : d.toISOString()}`)
  }
  return ms
}

/** `toDateTime(<seconds>)`: the whole-second floor of an instant, for the coarse (indexed) filter. */
export const dateTimeFloor = (d: Date): Sql => new Sql(`toDateTime(${Math.floor(epochMs(d) / 1000)})`)

// ---- TabSeparated data --------------------------------------------------------------------

const TSV_ESCAPES: Record<string, string> = {
  "\\": "\\\\",
  "\t": "\\t",
  "\n": "\\n",
  "\r": "\\r",
  "\0": "\\0",
  "\b": "\\b",
  "\f": "\\f"
}

/** A String field in TabSeparated format. */
export const tsvString = (value: string): string => {
  if (LONE_SURROGATE.test(value)) throw new UnsafeValue("string holds a lone UTF-16 surrogate")
  return value.replace(/[\\\t\n\r\0\b\f]/g, (c) => TSV_ESCAPES[c]!)
}

/** An unsigned integer field (safe integer or bigint). */
export const tsvUInt = (value: number | bigint): string => {
  if (typeof value === "number" && (!Number.isSafeInteger(value) || value < 0)) throw new UnsafeValue(`not a UInt: ${value}`)
  if (typeof value === "bigint" && value < 0n) throw new UnsafeValue(`not a UInt: ${value}`)
  return value.toString()
}

/** A `DateTime('UTC')` field: `YYYY-MM-DD hh:mm:ss` (the whole-second floor). */
export const tsvDateTime = (d: Date): string => {
  const ms = epochMs(d)
  return new Date(ms - (ms % 1000)).toISOString().slice(0, 19).replace("T", " ")
}

/** Integer digits a Decimal(38, 12) holds. */
const MAX_INT_DIGITS = 38 - MAX_SCALE

/**
 * A `Decimal(38, 12)` field: the canonical plain decimal (no exponent), unquoted. More than 12
 * fractional digits or 26 integer digits is refused — ClickHouse would reject or round it, and a
 * billable quantity must never change silently.
 */
export const tsvDecimal = (value: string): string => {
  if (!isDecimal(value)) throw new UnsafeValue(`not a decimal: ${JSON.stringify(value)}`)
  const canonical = normalize(value)
  const unsigned = canonical.startsWith("-") ? canonical.slice(1) : canonical
  const [intPart = "", fracPart = ""] = unsigned.split(".")
  if (fracPart.length > MAX_SCALE) throw new UnsafeValue(`more than ${MAX_SCALE} fractional digits: ${canonical}`)
  if (intPart.replace(/^0+/, "").length > MAX_INT_DIGITS) throw new UnsafeValue(`too large for Decimal(38, ${MAX_SCALE}): ${canonical}`)
  return canonical
}

/** One TabSeparated line (fields already encoded). */
export const tsvLine = (fields: ReadonlyArray<string>): string => fields.join("\t") + "\n"

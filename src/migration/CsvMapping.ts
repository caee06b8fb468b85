/**
 * The bulk mapping file `external_id,stripe_customer_id[,name,email]`: header and row checks that
 * need nothing but the file (ids present and well formed, duplicates inside the file). Checks
 * against the database and Stripe happen in MigrationService on the rows that pass these.
 */
import { Schema } from "effect"
import { type CsvItem, csvItems } from "./Csv.js"

export const CSV_COLUMNS = ["external_id", "stripe_customer_id", "name", "email"] as const
export type CsvColumn = (typeof CSV_COLUMNS)[number]

/** Stripe customer ids are `cus_` plus letters and digits. */
export const STRIPE_CUSTOMER_ID = /^cus_[A-Za-z0-9]{1,250}$/
export const MAX_EXTERNAL_ID_LENGTH = 255
export const MAX_TEXT_LENGTH = 500

export interface CsvMappingRow {
  readonly line: number
  readonly externalId: string
  readonly stripeCustomerId: string
  readonly name: string | null
  readonly email: string | null
}

export const CsvProblemCode = Schema.Literal(
  "malformed_csv",
  "wrong_field_count",
  "missing_external_id",
  "external_id_too_long",
  "missing_stripe_customer_id",
  "invalid_stripe_customer_id",
  "field_too_long",
  "duplicate_row",
  "duplicate_external_id",
  "duplicate_stripe_customer_id",
  "conflict",
  "stripe_customer_not_found",
  "stripe_customer_deleted",
  "stripe_check_failed",
  "customer_missing",
  "failed"
)
export type CsvProblemCode = typeof CsvProblemCode.Type

export interface CsvRowProblem {
  readonly line: number
  readonly code: CsvProblemCode
  readonly reason: string
  readonly externalId?: string | undefined
  readonly stripeCustomerId?: string | undefined
}

export type CsvHeaderError =
  | { readonly code: "empty_csv"; readonly message: string }
  | { readonly code: "invalid_csv_header"; readonly message: string }

export interface CsvMappingParse {
  /** Rows that passed the file checks, in file order (exact repeats of a row dropped). */
  readonly rows: ReadonlyArray<CsvMappingRow>
  /** Row problems in line order. */
  readonly problems: ReadonlyArray<CsvRowProblem>
  /** Data records in the file (header excluded, blank lines excluded). */
  readonly totalRows: number
}

const norm = (h: string) => h.trim().toLowerCase()

export interface CsvHeader {
  readonly line: number
  readonly width: number
  readonly index: ReadonlyMap<string, number>
}

type HeaderResult = { readonly _tag: "Left"; readonly left: CsvHeaderError } | { readonly _tag: "Right"; readonly right: CsvHeader }

/**
 * Header required: `external_id` and `stripe_customer_id`, optionally `name` and `email`, in any
 * order. Reads `items` up to the header record (further only to tell a bad header from an empty file).
 */
export const readCsvHeader = (items: Iterator<CsvItem>): HeaderResult => {
  let firstError: CsvItem | undefined
  for (let next = items.next(); !next.done; next = items.next()) {
    const item = next.value
    if (item._tag === "Error") {
      firstError ??= item
      continue
    }
    if (firstError !== undefined && firstError._tag === "Error")
      return { _tag: "Left", left: { code: "invalid_csv_header", message: `line ${firstError.line}: ${firstError.message}` } }
    const names = item.fields.map(norm)
    const index = new Map<string, number>()
    for (const [i, name] of names.entries()) {
      if (!(CSV_COLUMNS as ReadonlyArray<string>).includes(name))
        return { _tag: "Left", left: { code: "invalid_csv_header", message: `unknown column ${JSON.stringify(item.fields[i])} (expected external_id,stripe_customer_id[,name,email])` } }
      if (index.has(name)) return { _tag: "Left", left: { code: "invalid_csv_header", message: `column ${name} appears twice` } }
      index.set(name, i)
    }
    for (const required of ["external_id", "stripe_customer_id"])
      if (!index.has(required)) return { _tag: "Left", left: { code: "invalid_csv_header", message: `the header lacks the ${required} column` } }
    return { _tag: "Right", right: { line: item.line, width: names.length, index } }
  }
  return { _tag: "Left", left: { code: "empty_csv", message: "the file has no header line (expected external_id,stripe_customer_id[,name,email])" } }
}

/** The file checks of one data record (after the header): a candidate row, or its problem. */
export const checkCsvItem = (header: CsvHeader, item: CsvItem): CsvMappingRow | CsvRowProblem => {
  const line = item.line
  if (item._tag === "Error") return { line, code: "malformed_csv", reason: item.message }
  if (item.fields.length !== header.width) return { line, code: "wrong_field_count", reason: `expected ${header.width} fields, found ${item.fields.length}` }
  const cell = (column: CsvColumn) => {
    const i = header.index.get(column)
    return i === undefined ? "" : (item.fields[i] ?? "").trim()
  }
  const externalId = cell("external_id")
  const stripeCustomerId = cell("stripe_customer_id")
  const name = cell("name")
  const email = cell("email")
  const ids = { externalId: externalId || undefined, stripeCustomerId: stripeCustomerId || undefined }
  if (externalId === "") return { line, ...ids, code: "missing_external_id", reason: "external_id is empty" }
  if (externalId.length > MAX_EXTERNAL_ID_LENGTH)
    return { line, ...ids, code: "external_id_too_long", reason: `external_id is longer than ${MAX_EXTERNAL_ID_LENGTH} characters` }
  if (stripeCustomerId === "") return { line, ...ids, code: "missing_stripe_customer_id", reason: "stripe_customer_id is empty" }
  if (!STRIPE_CUSTOMER_ID.test(stripeCustomerId))
    return { line, ...ids, code: "invalid_stripe_customer_id", reason: "stripe_customer_id must look like cus_ followed by letters and digits" }
  if (name.length > MAX_TEXT_LENGTH || email.length > MAX_TEXT_LENGTH)
    return { line, ...ids, code: "field_too_long", reason: `name and email hold at most ${MAX_TEXT_LENGTH} characters` }
  return { line, externalId, stripeCustomerId, name: name === "" ? null : name, email: email === "" ? null : email }
}

export const isRowProblem = (r: CsvMappingRow | CsvRowProblem): r is CsvRowProblem => "code" in r

/**
 * Duplicates across the whole file, found in two passes so a file can be read in chunks: an exact
 * repeat of a pair is harmless (reported, applied once); one id paired with two different ids is
 * ambiguous, so every row of that id is refused — the first one included, which is why every
 * candidate row is `observe`d before any is `judge`d.
 */
export class CsvDuplicates {
  private readonly byExternal = new Map<string, { readonly other: string; readonly line: number }>()
  private readonly externalClash = new Map<string, number>()
  private readonly byStripe = new Map<string, { readonly other: string; readonly line: number }>()
  private readonly stripeClash = new Map<string, number>()
  private readonly seenPairs = new Map<string, number>()

  /** Pass 1: every candidate row, in file order. */
  observe(r: CsvMappingRow): void {
    const e = this.byExternal.get(r.externalId)
    if (e === undefined) this.byExternal.set(r.externalId, { other: r.stripeCustomerId, line: r.line })
    else if (e.other !== r.stripeCustomerId && !this.externalClash.has(r.externalId)) this.externalClash.set(r.externalId, r.line)
    const s = this.byStripe.get(r.stripeCustomerId)
    if (s === undefined) this.byStripe.set(r.stripeCustomerId, { other: r.externalId, line: r.line })
    else if (s.other !== r.externalId && !this.stripeClash.has(r.stripeCustomerId)) this.stripeClash.set(r.stripeCustomerId, r.line)
  }

  /** Pass 2, in file order: undefined when the row is to be linked. */
  judge(r: CsvMappingRow): CsvRowProblem | undefined {
    const ids = { externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
    const clashE = this.externalClash.get(r.externalId)
    if (clashE !== undefined) {
      const first = this.byExternal.get(r.externalId)!
      const otherLine = first.other !== r.stripeCustomerId ? first.line : clashE
      return { line: r.line, ...ids, code: "duplicate_external_id", reason: `external_id ${r.externalId} is paired with another stripe_customer_id on line ${otherLine}` }
    }
    const clashS = this.stripeClash.get(r.stripeCustomerId)
    if (clashS !== undefined) {
      const first = this.byStripe.get(r.stripeCustomerId)!
      const otherLine = first.other !== r.externalId ? first.line : clashS
      return { line: r.line, ...ids, code: "duplicate_stripe_customer_id", reason: `stripe_customer_id ${r.stripeCustomerId} is paired with another external_id on line ${otherLine}` }
    }
    const key = `${r.externalId}\u0000${r.stripeCustomerId}`
    const first = this.seenPairs.get(key)
    if (first !== undefined) return { line: r.line, ...ids, code: "duplicate_row", reason: `repeats line ${first}` }
    this.seenPairs.set(key, r.line)
    return undefined
  }
}

/**
 * The whole file at once (CLI previews, tests): header, file checks, duplicates. The import job
 * reads the same way in chunks (CsvImport.ts). Cells are trimmed; empty `name`/`email` cells mean
 * "not given".
 */
export const parseCsvMapping = (text: string): { readonly _tag: "Left"; readonly left: CsvHeaderError } | { readonly _tag: "Right"; readonly right: CsvMappingParse } => {
  const items = csvItems(text)
  const header = readCsvHeader(items)
  if (header._tag === "Left") return header
  const problems: Array<CsvRowProblem> = []
  const candidates: Array<CsvMappingRow> = []
  const duplicates = new CsvDuplicates()
  let totalRows = 0
  for (let next = items.next(); !next.done; next = items.next()) {
    totalRows++
    const checked = checkCsvItem(header.right, next.value)
    if (isRowProblem(checked)) problems.push(checked)
    else {
      candidates.push(checked)
      duplicates.observe(checked)
    }
  }
  const rows: Array<CsvMappingRow> = []
  for (const r of candidates) {
    const problem = duplicates.judge(r)
    if (problem === undefined) rows.push(r)
    else problems.push(problem)
  }
  problems.sort((a, b) => a.line - b.line)
  return { _tag: "Right", right: { rows, problems, totalRows } }
}

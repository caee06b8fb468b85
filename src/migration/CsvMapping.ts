/**
 * The bulk mapping file `external_id,stripe_customer_id[,name,email]`: header and row checks that
 * need nothing but the file (ids present and well formed, duplicates inside the file). Checks
 * against the database and Stripe happen in MigrationService on the rows that pass these.
 */
import { parseCsv } from "./Csv.js"

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

export type CsvProblemCode =
  | "malformed_csv"
  | "wrong_field_count"
  | "missing_external_id"
  | "external_id_too_long"
  | "missing_stripe_customer_id"
  | "invalid_stripe_customer_id"
  | "field_too_long"
  | "duplicate_row"
  | "duplicate_external_id"
  | "duplicate_stripe_customer_id"
  | "conflict"
  | "stripe_customer_not_found"
  | "stripe_customer_deleted"
  | "stripe_check_failed"
  | "customer_missing"
  | "failed"

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

/**
 * Header required: `external_id` and `stripe_customer_id`, optionally `name` and `email`, in any
 * order. Cells are trimmed; empty `name`/`email` cells mean "not given".
 */
export const parseCsvMapping = (text: string): { readonly _tag: "Left"; readonly left: CsvHeaderError } | { readonly _tag: "Right"; readonly right: CsvMappingParse } => {
  const parsed = parseCsv(text)
  const header = parsed.records[0]
  const firstError = parsed.errors[0]
  if (header === undefined || (firstError !== undefined && firstError.line < header.line))
    return firstError !== undefined && header !== undefined
      ? { _tag: "Left", left: { code: "invalid_csv_header", message: `line ${firstError.line}: ${firstError.message}` } }
      : { _tag: "Left", left: { code: "empty_csv", message: "the file has no header line (expected external_id,stripe_customer_id[,name,email])" } }
  const names = header.fields.map(norm)
  const index = new Map<string, number>()
  for (const [i, name] of names.entries()) {
    if (!(CSV_COLUMNS as ReadonlyArray<string>).includes(name))
      return { _tag: "Left", left: { code: "invalid_csv_header", message: `unknown column ${JSON.stringify(header.fields[i])} (expected external_id,stripe_customer_id[,name,email])` } }
    if (index.has(name)) return { _tag: "Left", left: { code: "invalid_csv_header", message: `column ${name} appears twice` } }
    index.set(name, i)
  }
  for (const required of ["external_id", "stripe_customer_id"])
    if (!index.has(required)) return { _tag: "Left", left: { code: "invalid_csv_header", message: `the header lacks the ${required} column` } }

  const problems: Array<CsvRowProblem> = parsed.errors.map((e) => ({ line: e.line, code: "malformed_csv" as const, reason: e.message }))
  const candidates: Array<CsvMappingRow> = []
  const cell = (fields: ReadonlyArray<string>, column: CsvColumn) => {
    const i = index.get(column)
    return i === undefined ? "" : (fields[i] ?? "").trim()
  }
  const data = parsed.records.slice(1)
  for (const record of data) {
    const line = record.line
    if (record.fields.length !== names.length) {
      problems.push({ line, code: "wrong_field_count", reason: `expected ${names.length} fields, found ${record.fields.length}` })
      continue
    }
    const externalId = cell(record.fields, "external_id")
    const stripeCustomerId = cell(record.fields, "stripe_customer_id")
    const name = cell(record.fields, "name")
    const email = cell(record.fields, "email")
    const ids = { externalId: externalId || undefined, stripeCustomerId: stripeCustomerId || undefined }
    if (externalId === "") problems.push({ line, ...ids, code: "missing_external_id", reason: "external_id is empty" })
    else if (externalId.length > MAX_EXTERNAL_ID_LENGTH)
      problems.push({ line, ...ids, code: "external_id_too_long", reason: `external_id is longer than ${MAX_EXTERNAL_ID_LENGTH} characters` })
    else if (stripeCustomerId === "") problems.push({ line, ...ids, code: "missing_stripe_customer_id", reason: "stripe_customer_id is empty" })
    else if (!STRIPE_CUSTOMER_ID.test(stripeCustomerId))
      problems.push({ line, ...ids, code: "invalid_stripe_customer_id", reason: "stripe_customer_id must look like cus_ followed by letters and digits" })
    else if (name.length > MAX_TEXT_LENGTH || email.length > MAX_TEXT_LENGTH)
      problems.push({ line, ...ids, code: "field_too_long", reason: `name and email hold at most ${MAX_TEXT_LENGTH} characters` })
    else candidates.push({ line, externalId, stripeCustomerId, name: name === "" ? null : name, email: email === "" ? null : email })
  }

  // Duplicates: an exact repeat of a pair is harmless (reported, applied once); one id paired
  // with two different ids is ambiguous, so every row of that id is refused.
  const byExternal = new Map<string, Array<CsvMappingRow>>()
  const byStripe = new Map<string, Array<CsvMappingRow>>()
  for (const r of candidates) {
    byExternal.set(r.externalId, [...(byExternal.get(r.externalId) ?? []), r])
    byStripe.set(r.stripeCustomerId, [...(byStripe.get(r.stripeCustomerId) ?? []), r])
  }
  const rows: Array<CsvMappingRow> = []
  const seenPairs = new Map<string, number>()
  for (const r of candidates) {
    const ids = { externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
    const sameExternal = byExternal.get(r.externalId)!
    const sameStripe = byStripe.get(r.stripeCustomerId)!
    const otherStripe = sameExternal.find((o) => o.stripeCustomerId !== r.stripeCustomerId)
    const otherExternal = sameStripe.find((o) => o.externalId !== r.externalId)
    if (otherStripe) {
      problems.push({
        line: r.line,
        ...ids,
        code: "duplicate_external_id",
        reason: `external_id ${r.externalId} is paired with another stripe_customer_id on line ${otherStripe.line}`
      })
      continue
    }
    if (otherExternal) {
      problems.push({
        line: r.line,
        ...ids,
        code: "duplicate_stripe_customer_id",
        reason: `stripe_customer_id ${r.stripeCustomerId} is paired with another external_id on line ${otherExternal.line}`
      })
      continue
    }
    const key = `${r.externalId}\u0000${r.stripeCustomerId}`
    const first = seenPairs.get(key)
    if (first !== undefined) {
      problems.push({ line: r.line, ...ids, code: "duplicate_row", reason: `repeats line ${first}` })
      continue
    }
    seenPairs.set(key, r.line)
    rows.push(r)
  }
  problems.sort((a, b) => a.line - b.line)
  return { _tag: "Right", right: { rows, problems, totalRows: data.length + parsed.errors.filter((e) => e.line > header.line).length } }
}

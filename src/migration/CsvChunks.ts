/**
 * A CSV import's file read a chunk at a time, and its running tally (CsvImport.ts). The tally is
 * immutable, so a chunk retried after its transaction rolled back starts from the same state.
 */
import type { LinkOutcome } from "../customers/CustomerLinker.js"
import { csvItems } from "./Csv.js"
import { checkCsvItem, type CsvDuplicates, type CsvMappingRow, type CsvRowProblem, isRowProblem, readCsvHeader } from "./CsvMapping.js"
import { type CsvImportSummary, MAX_PROBLEMS, type MigrationProgress, zeroCounts } from "./Model.js"

export interface Chunk {
  readonly records: number
  readonly rows: ReadonlyArray<CsvMappingRow>
  readonly problems: ReadonlyArray<CsvRowProblem>
  readonly warnings: number
}

/**
 * The file after its header, `size` records at a time (file checks and duplicates applied);
 * undefined once the file is read. Nothing but the chunk in hand is kept.
 */
export const chunkReader = (text: string, duplicates: CsvDuplicates) => {
  const items = csvItems(text)
  const header = readCsvHeader(items)
  let done = header._tag === "Left"
  return (size: number): Chunk | undefined => {
    if (done || header._tag === "Left") return undefined
    const chunk = { records: 0, rows: [] as Array<CsvMappingRow>, problems: [] as Array<CsvRowProblem>, warnings: 0 }
    while (chunk.records < size) {
      const next = items.next()
      if (next.done === true) {
        done = true
        break
      }
      chunk.records++
      const checked = checkCsvItem(header.right, next.value)
      if (isRowProblem(checked)) chunk.problems.push(checked)
      else {
        const problem = duplicates.judge(checked)
        if (problem === undefined) chunk.rows.push(checked)
        else if (problem.code === "duplicate_row") chunk.warnings++
        else chunk.problems.push(problem)
      }
    }
    return chunk.records > 0 ? chunk : undefined
  }
}

/** The linker's outcomes for a chunk's rows: the linkable ones, and the rows it refused as problems. */
export const judgeOutcomes = (rows: ReadonlyArray<CsvMappingRow>, outcomes: ReadonlyArray<LinkOutcome>) => {
  const good: Array<LinkOutcome> = []
  const problems: Array<CsvRowProblem> = []
  rows.forEach((r, i) => {
    const o = outcomes[i]!
    const ids = { line: r.line, externalId: r.externalId, stripeCustomerId: r.stripeCustomerId }
    if (o.mapping === "conflict")
      problems.push({
        ...ids,
        code: "conflict",
        reason:
          o.conflictWith?.stripeCustomerId !== undefined
            ? `external_id ${r.externalId} is already mapped to Stripe customer ${o.conflictWith.stripeCustomerId}`
            : `Stripe customer ${r.stripeCustomerId} is already mapped to customer ${o.conflictWith?.customerId ?? "?"}`
      })
    else if (o.mapping === "customer_missing")
      problems.push({ ...ids, code: "customer_missing", reason: `no customer with external_id ${r.externalId} (create_missing_customers=false)` })
    else good.push(o)
  })
  return { good, problems }
}

/** Where an import stands. */
export interface Tally {
  readonly rowsDone: number
  readonly valid: number
  readonly warnings: number
  readonly mapped: number
  readonly created: number
  readonly alreadyMapped: number
  readonly overwritten: number
  readonly bad: { readonly conflicts: number; readonly missingExternalId: number; readonly customerMissing: number; readonly failed: number }
  readonly problems: ReadonlyArray<CsvRowProblem>
  readonly problemsTotal: number
}

export const emptyTally: Tally = {
  rowsDone: 0,
  valid: 0,
  warnings: 0,
  mapped: 0,
  created: 0,
  alreadyMapped: 0,
  overwritten: 0,
  bad: { conflicts: 0, missingExternalId: 0, customerMissing: 0, failed: 0 },
  problems: [],
  problemsTotal: 0
}

/** A chunk's rows and outcomes (outcome undefined: the row is bad, its problem in `problems`). */
export const addChunk = (t: Tally, chunk: Chunk, problems: ReadonlyArray<CsvRowProblem>, outcomes: ReadonlyArray<LinkOutcome>): Tally => {
  const sorted = [...problems].sort((a, b) => a.line - b.line)
  const bad = { ...t.bad }
  for (const p of sorted) {
    if (p.code === "conflict") bad.conflicts++
    else if (p.code === "missing_external_id") bad.missingExternalId++
    else if (p.code === "customer_missing") bad.customerMissing++
    else bad.failed++
  }
  let { mapped, created, alreadyMapped, overwritten } = t
  for (const o of outcomes) {
    if (o.mapping === "created" || o.mapping === "updated") {
      mapped++
      if (o.customerCreated) created++
      if (o.conflictWith !== undefined && o.mapping === "updated") overwritten++
    }
    if (o.mapping === "unchanged") alreadyMapped++
  }
  const room = Math.max(0, MAX_PROBLEMS - t.problems.length)
  return {
    rowsDone: t.rowsDone + chunk.records,
    valid: t.valid + outcomes.length,
    warnings: t.warnings + chunk.warnings,
    mapped,
    created,
    alreadyMapped,
    overwritten,
    bad,
    problems: room > 0 ? [...t.problems, ...sorted.slice(0, room)] : t.problems,
    problemsTotal: t.problemsTotal + sorted.length
  }
}

export const progressOf = (t: Tally, applied: boolean): MigrationProgress => ({
  cursor: null,
  pages: 0,
  counts: {
    ...zeroCounts,
    seen: t.rowsDone,
    mapped: applied ? t.mapped : 0,
    created: applied ? t.created : 0,
    already_mapped: t.alreadyMapped,
    conflicts: t.bad.conflicts,
    missing_external_id: t.bad.missingExternalId,
    customer_missing: t.bad.customerMissing,
    failed: t.bad.failed
  },
  problems: t.problems.map((p) => ({
    stripe_customer_id: p.stripeCustomerId ?? "",
    external_id: p.externalId,
    code: p.code,
    message: `line ${p.line}: ${p.reason}`,
    line: p.line
  })),
  problemsTotal: t.problemsTotal
})

export const summaryOf = (t: Tally, applied: boolean): CsvImportSummary => ({
  valid_rows: t.valid,
  applied: applied && t.valid > 0,
  overwritten: t.overwritten,
  warnings_total: t.warnings
})

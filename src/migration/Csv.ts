/**
 * RFC 4180 CSV reading with the physical line each record starts on, because operators fix a
 * bad upload by line number and a quoted field may span several lines.
 *
 * Accepted: `,` separators; LF, CRLF or lone CR record ends; `"` quoting with `""` escapes;
 * quoted fields holding separators, quotes and line breaks; a UTF-8 byte order mark; a missing
 * final line break. Blank lines are skipped (they are not records). A record that breaks the
 * quoting rules is reported with its line and skipped; the records around it are still read.
 */

export interface CsvRecord {
  /** 1-based physical line on which the record starts. */
  readonly line: number
  readonly fields: ReadonlyArray<string>
}

export interface CsvSyntaxError {
  readonly line: number
  readonly message: string
}

export interface CsvParseResult {
  readonly records: ReadonlyArray<CsvRecord>
  readonly errors: ReadonlyArray<CsvSyntaxError>
}

const QUOTE = 34 // "
const COMMA = 44 // ,
const LF = 10
const CR = 13

export type CsvItem = ({ readonly _tag: "Record" } & CsvRecord) | ({ readonly _tag: "Error" } & CsvSyntaxError)

/**
 * The records (and syntax errors) of `input` one at a time, in file order: a large upload is read
 * in bounded steps by a caller that yields between them, with no array of every record.
 */
export function* csvItems(input: string): Generator<CsvItem, void, undefined> {
  const text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input
  const n = text.length
  let i = 0
  let line = 1

  /** Consumes one line break at i (CRLF counts once); returns true when there was one. */
  const lineBreak = (): boolean => {
    const c = text.charCodeAt(i)
    if (c === LF) {
      i++
      line++
      return true
    }
    if (c === CR) {
      i += text.charCodeAt(i + 1) === LF ? 2 : 1
      line++
      return true
    }
    return false
  }

  /** After an error, skip to the start of the next record (quotes no longer trusted). */
  const skipRecord = () => {
    while (i < n && !lineBreak()) i++
  }

  while (i < n) {
    const startLine = line
    // A blank line is not a record.
    if (lineBreak()) continue
    const fields: Array<string> = []
    let failed: string | undefined
    for (;;) {
      if (text.charCodeAt(i) === QUOTE) {
        i++
        let value = ""
        let closed = false
        while (i < n) {
          const c = text.charCodeAt(i)
          if (c === QUOTE) {
            if (text.charCodeAt(i + 1) === QUOTE) {
              value += '"'
              i += 2
              continue
            }
            i++
            closed = true
            break
          }
          if (c === LF || c === CR) {
            const from = i
            lineBreak()
            value += text.slice(from, i)
            continue
          }
          const from = i
          while (i < n) {
            const d = text.charCodeAt(i)
            if (d === QUOTE || d === LF || d === CR) break
            i++
          }
          value += text.slice(from, i)
        }
        if (!closed) {
          failed = `unterminated quoted field (opened on line ${startLine})`
          break
        }
        const next = text.charCodeAt(i)
        if (i < n && next !== COMMA && next !== LF && next !== CR) {
          failed = "unexpected character after a closing quote (quotes inside a field must be doubled)"
          skipRecord()
          break
        }
        fields.push(value)
      } else {
        const from = i
        while (i < n) {
          const c = text.charCodeAt(i)
          if (c === COMMA || c === LF || c === CR) break
          if (c === QUOTE) {
            failed = "a quote inside an unquoted field (quote the whole field and double the quote)"
            break
          }
          i++
        }
        if (failed !== undefined) {
          skipRecord()
          break
        }
        fields.push(text.slice(from, i))
      }
      if (i >= n) break
      if (text.charCodeAt(i) === COMMA) {
        i++
        continue
      }
      lineBreak()
      break
    }
    if (failed !== undefined) yield { _tag: "Error", line: startLine, message: failed }
    else yield { _tag: "Record", line: startLine, fields }
  }
}

export const parseCsv = (input: string): CsvParseResult => {
  const records: Array<CsvRecord> = []
  const errors: Array<CsvSyntaxError> = []
  for (const item of csvItems(input))
    if (item._tag === "Record") records.push({ line: item.line, fields: item.fields })
    else errors.push({ line: item.line, message: item.message })
  return { records, errors }
}

/** One field as RFC 4180 wants it: quoted only when it must be. */
export const formatCsvField = (value: string): string =>
  /[",\r\n]/.test(value) || value === "" ? `"${value.replace(/"/g, '""')}"` : value

/** Records → CSV text (CRLF line ends unless told otherwise, trailing line break). */
export const formatCsv = (rows: ReadonlyArray<ReadonlyArray<string>>, eol: "\r\n" | "\n" = "\r\n"): string =>
  rows.map((r) => r.map(formatCsvField).join(",")).join(eol) + eol

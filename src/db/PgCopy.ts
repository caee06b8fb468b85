/**
 * `COPY … FROM STDIN` on the connection of the current transaction (PostgreSQL server only).
 *
 * @effect/sql-pg runs on `pg`, which has no COPY API of its own: a query object with a `submit`
 * method (the extension point `pg-copy-streams` uses) receives the protocol messages instead.
 * This one sends the whole text-format payload as soon as the server answers CopyInResponse
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-COPY).
 *
 * Not for PGlite: its socket bridge runs each protocol message as a separate exchange, and a
 * CopyInResponse there ends in "protocol synchronization was lost".
 */
import { SqlClient, SqlError } from "@effect/sql"
import { Effect, Option } from "effect"

interface PgConnection {
  query(text: string): void
  sendCopyFromChunk(chunk: Buffer): void
  endCopyFrom(): void
}
interface PgRawClient {
  query(submittable: object): void
}

class CopyFromStdin {
  private error: unknown = undefined
  private count = 0
  constructor(
    readonly text: string,
    private readonly payload: Buffer,
    readonly callback: (error: unknown, rows: number) => void
  ) {}
  submit(connection: PgConnection) {
    connection.query(this.text)
  }
  handleCopyInResponse(connection: PgConnection) {
    if (this.payload.length > 0) connection.sendCopyFromChunk(this.payload)
    connection.endCopyFrom()
  }
  handleCommandComplete(msg: { text?: string }) {
    this.count = Number((msg.text ?? "").split(" ")[1] ?? 0)
  }
  handleError(error: unknown) {
    this.error = error
  }
  handleReadyForQuery() {
    this.callback(this.error, this.count)
  }
  handleRowDescription() {}
  handleDataRow() {}
  handleEmptyQuery() {}
  handleCopyData() {}
  handlePortalSuspended() {}
}

/** A value in COPY text format: `\N` is NULL; backslash, tab, newline and CR escaped. */
export const copyText = (v: string | null): string =>
  v === null ? "\\N" : /[\\\t\n\r]/.test(v) ? v.replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n").replace(/\r/g, "\\r") : v

/** Rows (already in COPY text format per value) as one payload. */
export const copyPayload = (rows: ReadonlyArray<ReadonlyArray<string>>): Buffer =>
  Buffer.from(rows.map((r) => r.join("\t")).join("\n") + (rows.length > 0 ? "\n" : ""), "utf8")

/**
 * COPY `payload` into `table (columns)` on the current transaction's connection. `table` and
 * `columns` are identifiers written in code, never input. Fails when called outside a
 * transaction (the staged rows would be on an arbitrary pooled connection).
 */
export const copyIn = (table: string, columns: ReadonlyArray<string>, payload: Buffer) =>
  Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (tx) => {
    const client = Option.getOrUndefined(Option.map(tx, ([conn]) => (conn as unknown as { readonly pg?: PgRawClient }).pg))
    if (client === undefined)
      return Effect.fail(new SqlError.SqlError({ cause: new Error("COPY needs the connection of a transaction"), message: "COPY outside a transaction" }))
    return Effect.async<number, SqlError.SqlError>((resume) => {
      client.query(
        new CopyFromStdin(`COPY ${table} (${columns.join(", ")}) FROM STDIN`, payload, (error, rows) =>
          resume(error ? Effect.fail(new SqlError.SqlError({ cause: error, message: "COPY failed" })) : Effect.succeed(rows))
        )
      )
    })
  })

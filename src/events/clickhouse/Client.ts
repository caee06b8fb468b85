/**
 * A thin Effect layer over `@clickhouse/client` (HTTP), shaped by what ClickHouse 18.16 accepts:
 * - queries are pre-built `Sql` (values inlined by `escape.ts`; 18.16 has no query parameters);
 * - results come back as JSONEachRow (18.16 has no JSONCompactEachRow); callers select decimals
 *   with `toString(...)` so no quantity is ever parsed as a JS number;
 * - inserts go as TabSeparated text (18.16 rejects quoted decimals in JSONEachRow).
 * The client sends no settings of its own unless asked (checked against 18.16: ping, query,
 * command and insert work with the defaults), so no `clickhouse_settings` workaround is needed.
 */
import { createClient, ClickHouseLogLevel, type ClickHouseClient } from "@clickhouse/client"
import { Effect, Redacted, Scope } from "effect"
import { Readable } from "node:stream"
import { EventStoreError } from "../EventStore.js"
import { isIdentifier, type Sql } from "./escape.js"
import { FILTERED, scrubString } from "../../observability/Scrub.js"

export interface ClickHouseSettings {
  /** `http(s)://[user[:password]@]host:port[/database]`; credentials are taken out of the URL. */
  readonly url: string | Redacted.Redacted<string>
  /** Overrides the database in the URL path; default `flexprice`. */
  readonly database?: string | undefined
  readonly username?: string | undefined
  readonly password?: Redacted.Redacted<string> | undefined
  /** Per-request timeout; 10M-row aggregations need more than the client's 30 s default. */
  readonly requestTimeoutMs?: number | undefined
}

export interface ClickHouseConnection {
  /** origin only: no credentials, no path */
  readonly url: string
  readonly database: string
  readonly username: string | undefined
  readonly password: Redacted.Redacted<string> | undefined
  readonly requestTimeoutMs: number
}

export const DEFAULT_DATABASE = "flexprice"

/** Resolves settings into a connection; the error message never repeats the URL (it may hold a password). */
export const resolveConnection = (settings: ClickHouseSettings): ClickHouseConnection => {
  const raw = Redacted.isRedacted(settings.url) ? Redacted.value(settings.url) : settings.url
  let parsed: URL
  try {
    parsed = new URL(raw)
  } catch {
    throw new Error("ClickHouse URL is not a valid URL (expected http://host:8123[/database])")
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`ClickHouse URL must use http or https, got ${parsed.protocol}`)
  }
  const pathDb = decodeURIComponent(parsed.pathname.replace(/^\/+|\/+$/g, ""))
  const database = settings.database ?? (pathDb === "" ? DEFAULT_DATABASE : pathDb)
  if (!isIdentifier(database)) throw new Error(`ClickHouse database name must match [A-Za-z_][A-Za-z0-9_]*, got ${JSON.stringify(database)}`)
  const username = settings.username ?? (parsed.username === "" ? undefined : decodeURIComponent(parsed.username))
  const password =
    settings.password ?? (parsed.password === "" ? undefined : Redacted.make(decodeURIComponent(parsed.password)))
  return {
    url: parsed.origin,
    database,
    username,
    password,
    requestTimeoutMs: settings.requestTimeoutMs ?? 300_000
  }
}

export type Row = Record<string, unknown>

export interface ChClient {
  readonly connection: ClickHouseConnection
  /** SELECT … → rows of JSONEachRow */
  readonly query: (operation: string, query: Sql) => Effect.Effect<ReadonlyArray<Row>, EventStoreError>
  /** DDL and other statements without a result */
  readonly command: (operation: string, query: Sql) => Effect.Effect<void, EventStoreError>
  /** INSERT INTO table (columns) FORMAT TabSeparated, with `data` already encoded by escape.ts */
  readonly insertTsv: (operation: string, table: string, columns: ReadonlyArray<string>, data: string) => Effect.Effect<void, EventStoreError>
  readonly ping: (operation: string) => Effect.Effect<void, EventStoreError>
}

/** Keeps the message and ClickHouse error code; drops anything that could carry the password. */
const sanitize = (connection: ClickHouseConnection, error: unknown): Error => {
  const secret = connection.password ? Redacted.value(connection.password) : undefined
  const raw = error instanceof Error ? error.message : String(error)
  // The password itself first, whatever its length; then anything secret-looking.
  const message = scrubString(secret ? raw.split(secret).join(FILTERED) : raw)
  const out = new Error(message.trim())
  // The client's error parser expects the current server's message format; 18.16 says
  // "Code: 57, e.displayText() = ...", so the ClickHouse error code is read from the text too.
  const own = error !== null && typeof error === "object" && "code" in error ? (error as { code: unknown }).code : undefined
  const code = typeof own === "string" || typeof own === "number" ? String(own) : /^Code: (\d+)/.exec(raw.trim())?.[1]
  if (code !== undefined) Object.assign(out, { code })
  return out
}

const makeRaw = (connection: ClickHouseConnection, database: string | undefined): ClickHouseClient =>
  createClient({
    url: connection.url,
    ...(database !== undefined ? { database } : {}),
    ...(connection.username !== undefined ? { username: connection.username } : {}),
    ...(connection.password !== undefined ? { password: Redacted.value(connection.password) } : {}),
    request_timeout: connection.requestTimeoutMs,
    // The client would log failed requests itself; errors reach callers as EventStoreError instead.
    log: { level: ClickHouseLogLevel.OFF },
    application: "flexprice"
  })

const wrap = <A>(connection: ClickHouseConnection, operation: string, run: (signal: AbortSignal) => Promise<A>) =>
  Effect.tryPromise({
    try: run,
    catch: (error) => new EventStoreError({ backend: "clickhouse", operation, cause: sanitize(connection, error) })
  })

const fromRaw = (connection: ClickHouseConnection, client: ClickHouseClient): ChClient => ({
  connection,
  query: (operation, query) =>
    wrap(connection, operation, async (signal) => {
      const rs = await client.query({ query: query.text, format: "JSONEachRow", abort_signal: signal })
      return rs.json<Row>()
    }),
  command: (operation, query) =>
    wrap(connection, operation, async (signal) => {
      await client.command({ query: query.text, abort_signal: signal })
    }),
  insertTsv: (operation, table, columns, data) =>
    wrap(connection, operation, async (signal) => {
      await client.insert({
        table,
        columns: [...columns] as [string, ...Array<string>],
        values: Readable.from([Buffer.from(data, "utf8")], { objectMode: false }),
        format: "TabSeparated",
        abort_signal: signal
      })
    }),
  ping: (operation) =>
    wrap(connection, operation, async () => {
      const r = await client.ping()
      if (!r.success) throw r.error
    })
})

/** A client bound to `connection.database` (or the server default when `database` is "default"), closed with the scope. */
export const makeClient = (
  connection: ClickHouseConnection,
  database: string = connection.database
): Effect.Effect<ChClient, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => makeRaw(connection, database)),
    (client) => Effect.promise(() => client.close()).pipe(Effect.ignore)
  ).pipe(Effect.map((client) => fromRaw(connection, client)))

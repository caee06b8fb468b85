/**
 * What every test app shares, whichever way it starts (TestApp.layer, the migration and demo
 * suites' own start-ups): fresh databases (a copy of the migrated PGlite template, or a new
 * PostgreSQL database), the service's test settings, the operator access tests inspect rows with,
 * answers checked against openapi.json, and the backends a suite runs on.
 */
import { Effect, Layer } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"
import { inject } from "vitest"
import { ElevatedAccess } from "../../src/db/RowSecurity.js"
import type { HttpAnswer } from "../../src/demo/Fetch.js"
import { withServiceUrl } from "./clickhouse.js"
import { contractCheckEnabled, openApiContract } from "./openapiContract.js"
import type { ErrorEnvelope } from "./routes.js"

export type Backend = "pglite" | "postgres" | "clickhouse"

export const POSTGRES_URL_VAR = "FLEXPRICE_TEST_POSTGRES_URL"

/** A fresh database on the test PostgreSQL server; dropped by the returned cleanup. */
export const freshPostgresDatabase = async (serverUrl: string): Promise<{ url: string; drop: () => Promise<void> }> => {
  const name = `fp_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
  const admin = (statement: string) =>
    Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(Layer.build(PgClient.layer({ url: Redacted.make(serverUrl), maxConnections: 1 })), (ctx) =>
          Effect.provide(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(statement)), ctx)
        )
      )
    )
  await admin(`CREATE DATABASE ${name}`)
  const u = new URL(serverUrl)
  u.pathname = `/${name}`
  return {
    url: u.toString(),
    drop: async () => {
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    }
  }
}

/** A fresh embedded data directory copied from the migrated template. */
export const freshDataDir = (): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-test-"))
  fs.cpSync(inject("pgliteTemplateDir"), dir, { recursive: true })
  return dir
}

/** An answer of the service: what came over the wire, and typed views that say when they do not apply. */
export interface Answer<S> {
  readonly status: number
  readonly contentType: string | null
  readonly text: string
  /** The body parsed as JSON; the text when it is not JSON; undefined when empty. */
  readonly body: unknown
  /** The documented 2xx body; reading it from any other answer throws with the status and body. */
  readonly data: S
  /** The error envelope's `error`; reading it from an answer below 400 throws with the status and body. */
  readonly error: ErrorEnvelope["error"]
}

/** A response of the service fetched by hand (a full URL), checked against openapi.json like `request`'s. */
export const checkedAnswer = async <S>(method: string, url: string, response: Response): Promise<Answer<S>> => {
  const text = await response.text()
  let body: unknown = undefined
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = text
  }
  const raw: HttpAnswer = { status: response.status, body, text, contentType: response.headers.get("content-type") }
  const u = new URL(url)
  if (contractCheckEnabled()) openApiContract().assert({ method, url: u.pathname + u.search, status: raw.status, contentType: raw.contentType, text })
  return answerOf<S>(raw, `${method} ${u.pathname}`)
}

/** Gives an answer its typed views (the contract check has already matched the body to the document). */
export const answerOf = <S>(raw: HttpAnswer, label: string): Answer<S> => {
  const refuse = (wanted: string): never => {
    throw new Error(`${label} → ${raw.status}, not ${wanted}: ${raw.text.slice(0, 500)}`)
  }
  return {
    ...raw,
    get data(): S {
      return raw.status >= 200 && raw.status < 300 ? (raw.body as S) : refuse("a 2xx answer")
    },
    get error(): ErrorEnvelope["error"] {
      const body = raw.body
      if (raw.status < 400 || typeof body !== "object" || body === null || !("error" in body)) return refuse("an error envelope")
      return (body as ErrorEnvelope).error
    }
  }
}

/**
 * Merged beside a test app's layers: effects the test runs itself act as an operator at psql,
 * reading and changing every tenant's rows (the table owner). The served app and its workers do
 * not get it and run as in production (src/db/RowSecurity.ts); product code run by the test
 * inside a tenant scope still meets that scope's wall.
 */
export const OperatorAccess = Layer.succeed(ElevatedAccess, { role: "owner", reason: "test inspection" })

/** A test service's settings: no watermark lag, no scheduler, a fresh master key; `extra` wins. */
export const testEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  FLEXPRICE_HTTP_ADDR: "127.0.0.1:0",
  FLEXPRICE_WATERMARK_LAG_SECONDS: "0",
  FLEXPRICE_SCHEDULE_ENABLED: "false",
  // a fresh master key per app (PostgreSQL mode refuses to start without one)
  FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}`,
  ...extra
})

/**
 * The backends a suite runs on: always PGlite; PostgreSQL when FLEXPRICE_TEST_POSTGRES_URL is
 * set (and required under CI). `register` is called once per available backend.
 */
export const forEachBackend = (
  backends: ReadonlyArray<Backend>,
  register: (backend: Backend) => void
): void => {
  for (const b of backends) {
    if (b === "pglite") register(b)
    else if (b === "postgres")
      withServiceUrl({ label: "postgres", envVar: POSTGRES_URL_VAR, example: "postgres://postgres@127.0.0.1:5432/postgres" }, () => register(b))
    else withServiceUrl({ label: "clickhouse", envVar: "FLEXPRICE_TEST_CLICKHOUSE_URL", example: "http://127.0.0.1:8123" }, () => register(b))
  }
}

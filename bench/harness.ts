/**
 * Starts the real service in this process for benchmarks (fresh embedded data dir, or a fresh
 * PostgreSQL database when a server URL is given), with logs at warning level.
 */
import { HttpServer } from "@effect/platform"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, LogLevel, ManagedRuntime, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeServerLive } from "../src/http/Server.js"
import { type AppServices, localService } from "../src/LocalService.js"
import { TenantRepo } from "../src/repositories/TenantRepo.js"

export interface BenchApp {
  readonly baseUrl: string
  readonly apiKey: string
  readonly scope: { readonly tenantId: string; readonly environmentId: string }
  readonly runtime: ManagedRuntime.ManagedRuntime<AppServices, unknown>
  readonly dispose: () => Promise<void>
}

const adminSql = (serverUrl: string, statement: string) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(Layer.build(PgClient.layer({ url: Redacted.make(serverUrl), maxConnections: 1 })), (ctx) =>
        Effect.provide(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe(statement)), ctx)
      )
    )
  )

export const startBenchApp = async (options: { postgresUrl?: string; clickhouseUrl?: string; env?: Record<string, string> } = {}): Promise<BenchApp> => {
  const env: Record<string, string> = { FLEXPRICE_HTTP_ADDR: "127.0.0.1:0", FLEXPRICE_SCHEDULE_ENABLED: "false", FLEXPRICE_ENCRYPTION_KEYS: `1:${randomBytes(32).toString("base64")}`, ...options.env }
  const cleanups: Array<() => Promise<void>> = []
  if (options.postgresUrl) {
    const name = `fp_bench_${Date.now().toString(36)}`
    await adminSql(options.postgresUrl, `CREATE DATABASE ${name}`)
    const u = new URL(options.postgresUrl)
    u.pathname = `/${name}`
    env["FLEXPRICE_DATABASE_URL"] = u.toString()
    cleanups.push(() => adminSql(options.postgresUrl!, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).then(() => undefined))
  } else {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-bench-"))
    env["FLEXPRICE_DATA_DIR"] = dir
    cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
  }
  if (options.clickhouseUrl) {
    env["FLEXPRICE_CLICKHOUSE_URL"] = options.clickhouseUrl
    env["FLEXPRICE_CLICKHOUSE_DATABASE"] = env["FLEXPRICE_CLICKHOUSE_DATABASE"] ?? `flexprice_bench`
  }
  const runtime = ManagedRuntime.make(
    localService({ server: NodeServerLive, settings: env, processEnvironment: true, beside: Layer.empty, below: Layer.empty, logLevel: LogLevel.Warning })
  )
  const address = await runtime.runPromise(Effect.map(HttpServer.HttpServer, (s) => s.address))
  const baseUrl = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
  const tenant = await runtime.runPromise(Effect.flatMap(TenantRepo, (r) => r.create(`bench-${Date.now()}`, "bench")))
  return {
    baseUrl,
    apiKey: tenant.apiKey,
    scope: { tenantId: tenant.tenantId, environmentId: tenant.environmentId },
    runtime,
    dispose: async () => {
      await runtime.dispose()
      for (const c of cleanups) await c()
    }
  }
}

export const machine = () =>
  `${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`

/**
 * Runs once per `vitest run`: builds a migrated PGlite data directory that every embedded test
 * app copies (initdb + migrations take seconds; a copy takes milliseconds).
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Layer, Logger, LogLevel, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import * as Database from "../../src/db/Database.js"

declare module "vitest" {
  export interface ProvidedContext {
    pgliteTemplateDir: string
  }
}

export default async function setup(project: TestProject) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-template-"))
  await Effect.runPromise(
    Effect.scoped(Layer.build(Database.layerMigrated({ url: Option.none(), dataDir: dir }).pipe(Layer.provide(NodeContext.layer)))).pipe(
      Logger.withMinimumLogLevel(LogLevel.Warning)
    )
  )
  fs.rmSync(path.join(dir, "flexprice.lock"), { force: true })
  project.provide("pgliteTemplateDir", dir)
  return () => fs.rmSync(dir, { recursive: true, force: true })
}

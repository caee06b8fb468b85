#!/usr/bin/env node
/**
 * `npm test`: the suite in two vitest runs, one per project of vitest.config.ts. Vitest takes the
 * pool's isolation from the run, not from a project, so each project gets its own run:
 * `isolated` (a fresh process per file) and then `shared` (`--isolate=false`, a worker keeps its
 * modules between files). Arguments go to both runs; with a file filter, one of them may find
 * nothing, which is not a failure. Both runs always go; the exit code is the first failure's.
 * Plain `npx vitest run` runs every file isolated: slower, equally correct.
 */
import { spawnSync } from "node:child_process"
import { createRequire } from "node:module"
import * as path from "node:path"

const vitest = path.join(path.dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs")
const args = process.argv.slice(2)
const filtered = args.some((a) => !a.startsWith("-"))
const run = (project) =>
  spawnSync(process.execPath, [vitest, "run", ...project, ...args, ...(filtered ? ["--passWithNoTests"] : [])], { stdio: "inherit" }).status ?? 1
const isolated = run(["--project", "isolated"])
const shared = run(["--project", "shared", "--isolate=false"])
process.exit(isolated !== 0 ? isolated : shared)

/**
 * `npm run simulate -- --seed S --steps N [--count K] [--backend pglite|postgres]
 *   [--include negative_quantities,...] [--replay a.json,b.json] [--name NAME] [--shrink-seconds T] [--verbose]`
 *
 * Runs K seeded histories (S, S+1, …) of the deterministic simulator (test/simulation/) against
 * the whole service and the Stripe emulator; on a violation prints the seed, shrinks the history
 * and writes it to test/simulation/regressions/<name>.json. `--include` generates operations of
 * known bugs (test/simulation/model.ts KNOWN_BUGS) to hunt them. Exit code 1 on a violation.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const argv = process.argv.slice(2)
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? argv[i + 1] : undefined
}
const int = (name: string, dflt: number): number => {
  const v = flag(name)
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer`)
    process.exit(2)
  }
  return n
}
const backend = flag("backend") ?? "pglite"
if (backend !== "pglite" && backend !== "postgres") {
  console.error("--backend must be pglite or postgres")
  process.exit(2)
}
const args = {
  seed: int("seed", 1),
  steps: int("steps", 25),
  count: int("count", 1),
  backend,
  include: (flag("include") ?? "").split(",").filter((s) => s !== ""),
  ...(flag("replay") ? { replay: flag("replay")!.split(",").map((f) => path.resolve(f)) } : {}),
  ...(flag("name") ? { name: flag("name") } : {}),
  shrinkSeconds: int("shrink-seconds", 600),
  verbose: argv.includes("--verbose")
}
const outFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-sim-")), "out.json")
const root = path.resolve(import.meta.dirname, "..")
const res = spawnSync(
  process.execPath,
  [path.join(root, "node_modules/vitest/vitest.mjs"), "run", "--config", "test/simulation/vitest.simulate.config.ts", "--reporter=dot"],
  { cwd: root, stdio: "inherit", env: { ...process.env, SIM_ARGS: JSON.stringify(args), SIM_OUT: outFile } }
)
if (fs.existsSync(outFile)) console.log(fs.readFileSync(outFile, "utf8"))
fs.rmSync(path.dirname(outFile), { recursive: true, force: true })
process.exit(res.status ?? 1)

/**
 * An existing embedded data directory is restricted to the service's user at start: every
 * directory 0700, every file 0600, however loose it was (PGlite writes its files 0666).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { layerFrom } from "../../src/db/Database.js"
import { asOwner } from "../../src/db/RowSecurity.js"
import { freshDataDir } from "../support/app.js"

const entries = (root: string): Array<{ p: string; dir: boolean; mode: number }> => {
  const out: Array<{ p: string; dir: boolean; mode: number }> = []
  const walk = (p: string) => {
    const st = fs.lstatSync(p)
    out.push({ p, dir: st.isDirectory(), mode: st.mode & 0o777 })
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n))
  }
  walk(root)
  return out
}

const open = (dataDir: string) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(Layer.build(layerFrom({ url: Option.none(), dataDir })), (ctx) =>
        // As the table owner: a new directory has no migrations, so no service roles yet.
        Effect.provide(Effect.flatMap(PgClient.PgClient, (sql) => sql`SELECT 1 AS one`.pipe(asOwner("only opens the directory"))), ctx)
      )
    )
  )

describe("embedded data directory permissions", () => {
  const dirs: Array<string> = []
  afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })))

  it("tightens an existing world-writable tree to 0700/0600 at start", async () => {
    const dir = freshDataDir()
    dirs.push(dir)
    for (const e of entries(dir)) fs.chmodSync(e.p, e.dir ? 0o777 : 0o666)
    expect(entries(dir).filter((e) => (e.mode & 0o077) !== 0).length).toBeGreaterThan(100)
    await open(dir)
    const loose = entries(dir).filter((e) => e.mode !== (e.dir ? 0o700 : 0o600))
    expect(loose.map((e) => `${path.relative(dir, e.p)} ${e.mode.toString(8)}`)).toEqual([])
  })

  it("a new data directory ends up 0700/0600 too", async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), "flexprice-mode-"))
    dirs.push(parent)
    const dir = path.join(parent, "data")
    await open(dir)
    const loose = entries(dir).filter((e) => e.mode !== (e.dir ? 0o700 : 0o600))
    expect(loose.map((e) => `${path.relative(dir, e.p)} ${e.mode.toString(8)}`)).toEqual([])
  })
})

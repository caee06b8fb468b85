/**
 * One process per embedded data directory. PGlite is a single-process database: two processes
 * writing the same files would corrupt it. A lock file holding the owner's pid is created with
 * O_EXCL; a lock whose pid no longer runs (the owner was SIGKILLed) is stale and taken over.
 */
import { Data, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

export class DataDirLocked extends Data.TaggedError("DataDirLocked")<{
  readonly dataDir: string
  readonly pid: number
}> {
  override get message() {
    return `data directory ${this.dataDir} is in use by process ${this.pid}; stop it or use another FLEXPRICE_DATA_DIR (embedded PGlite allows one process per directory)`
  }
}

export class DataDirUnusable extends Data.TaggedError("DataDirUnusable")<{
  readonly dataDir: string
  readonly reason: string
}> {
  override get message() {
    return `data directory ${this.dataDir} cannot be used: ${this.reason}`
  }
}

const isRunning = (pid: number): boolean => {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const readPid = (file: string): number => {
  try {
    return Number.parseInt(fs.readFileSync(file, "utf8").trim().split(/\s+/)[0] ?? "", 10)
  } catch {
    return NaN
  }
}

const tryCreate = (file: string): boolean => {
  try {
    const fd = fs.openSync(file, "wx", 0o600)
    fs.writeSync(fd, `${process.pid}\n`)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false
    throw e
  }
}

/** Acquire the lock for the scope's lifetime. */
export const acquireDataDirLock = (dataDir: string) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })
        const file = path.join(dataDir, "flexprice.lock")
        for (let attempt = 0; attempt < 3; attempt++) {
          if (tryCreate(file)) return { file, tookOver: undefined as number | undefined }
          const pid = readPid(file)
          if (pid === process.pid) throw new DataDirLocked({ dataDir, pid })
          if (isRunning(pid)) throw new DataDirLocked({ dataDir, pid })
          // Stale: rename it away atomically so only one contender removes it.
          const stale = `${file}.stale-${process.pid}`
          try {
            fs.renameSync(file, stale)
            fs.rmSync(stale, { force: true })
          } catch {
            // another process won the race; loop and re-check
          }
          if (tryCreate(file)) return { file, tookOver: pid }
        }
        throw new DataDirLocked({ dataDir, pid: readPid(path.join(dataDir, "flexprice.lock")) })
      },
      catch: (e) =>
        e instanceof DataDirLocked ? e : new DataDirUnusable({ dataDir, reason: (e as Error).message })
    }).pipe(
      Effect.tap(({ tookOver }) =>
        tookOver === undefined
          ? Effect.void
          : Effect.logWarning(`took over a stale lock left by process ${tookOver} in ${dataDir}`)
      )
    ),
    ({ file }) =>
      Effect.sync(() => {
        if (readPid(file) === process.pid) fs.rmSync(file, { force: true })
      })
  )

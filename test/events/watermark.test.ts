/**
 * The ingestion watermark never passes a write that could still commit: embedded, it stays
 * below in-flight stamps; on a PostgreSQL server (several replicas), choosing it waits for every
 * in-flight writer's transaction, so a stamp at or below it always belongs to a committed write.
 */
import { NodeContext } from "@effect/platform-node"
import { ConfigProvider, Deferred, Effect, Fiber, Layer, Option, Redacted } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as Database from "../../src/db/Database.js"
import { IngestWatermark } from "../../src/events/IngestWatermark.js"
import { forEachBackend, freshDataDir, freshPostgresDatabase, POSTGRES_URL_VAR } from "../support/app.js"

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const c of cleanups) await c()
})

const layerFor = async (backend: "pglite" | "postgres") => {
  if (backend === "pglite") {
    const dir = freshDataDir()
    const env = new Map([["FLEXPRICE_DATA_DIR", dir], ["FLEXPRICE_WATERMARK_LAG_SECONDS", "0"]])
    return IngestWatermark.Default.pipe(
      Layer.provide(Database.layerFrom({ url: Option.none(), dataDir: dir })),
      Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(env)))
    )
  }
  const db = await freshPostgresDatabase(process.env[POSTGRES_URL_VAR]!)
  cleanups.push(db.drop)
  const env = new Map([["FLEXPRICE_DATABASE_URL", db.url], ["FLEXPRICE_WATERMARK_LAG_SECONDS", "0"]])
  return IngestWatermark.Default.pipe(
    Layer.provide(Database.layerMigrated({ url: Option.some(Redacted.make(db.url)), dataDir: "" }).pipe(Layer.provide(NodeContext.layer))),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(env)))
  )
}

forEachBackend(["pglite", "postgres"], (backend) => {
  if (backend === "clickhouse") return
  describe(`ingestion watermark on ${backend}`, () => {
    it("never reaches a stamp whose write has not committed", async () => {
      const layer = await layerFor(backend)
      const result = await Effect.runPromise(
        Effect.gen(function* () {
          const wm = yield* IngestWatermark
          const stampedAt = yield* Deferred.make<Date>()
          let committedAt = 0
          // a slow write: holds its stamp for 1.5 s before "committing"
          const writer = yield* Effect.fork(
            wm.stamped((ingestedAt) =>
              Deferred.succeed(stampedAt, ingestedAt).pipe(
                Effect.zipRight(Effect.sleep("1500 millis")),
                Effect.tap(() => Effect.sync(() => (committedAt = Date.now())))
              )
            )
          )
          const stamp = yield* Deferred.await(stampedAt)
          yield* Effect.sleep("100 millis")
          const watermark = yield* wm.current
          const returnedAt = Date.now()
          yield* Fiber.join(writer)
          const after = yield* wm.current
          return { stamp, watermark, returnedAt, committedAt, after }
        }).pipe(Effect.provide(layer), Effect.scoped)
      )
      // either below the in-flight stamp, or chosen only after that write committed
      const below = result.watermark.getTime() < result.stamp.getTime()
      const waited = result.returnedAt >= result.committedAt && result.committedAt > 0
      expect(below || waited).toBe(true)
      if (backend === "postgres") expect(waited).toBe(true) // the exclusive lock waited for the writer
      // once the write is done the watermark moves past its stamp
      expect(result.after.getTime()).toBeGreaterThanOrEqual(result.stamp.getTime())
    }, 60_000)
  })
})

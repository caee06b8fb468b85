/**
 * The sync pipeline reads rows with `ingested_at <= watermark` and then never looks below that
 * watermark again for the window. A row stamped `ingested_at = T` but committed after a sync
 * chose a watermark ≥ T would be skipped for ever, so the watermark must stay below every
 * in-flight write.
 *
 * - Embedded (PGlite, one process): in-flight writes register their stamp here and the
 *   watermark stays below the oldest one.
 * - PostgreSQL server (several replicas may ingest): every stamped write runs in a transaction
 *   holding a SHARED advisory lock and takes its stamp from the database clock after acquiring
 *   it; choosing a watermark takes the same lock EXCLUSIVELY, which waits for every in-flight
 *   writer to commit or roll back, then reads the database clock. So every stamp ≤ watermark
 *   belongs to a committed write, and every later writer stamps above it — across replicas,
 *   without relying on a time margin.
 * FLEXPRICE_WATERMARK_LAG_SECONDS additionally holds the watermark back (default 2 s; it also
 * covers ClickHouse inserts becoming visible).
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, Option, Schema } from "effect"
import { DatabaseConfig, SyncConfig } from "../config/AppConfig.js"
import { DbDate } from "../db/Rows.js"
import type { IngestStamp } from "./EventStore.js"

/** Advisory lock key shared by ingest writers (shared) and watermark readers (exclusive). */
export const INGEST_LOCK_KEY = 7_042_001

/**
 * Class of the per-tenant advisory lock `pg_advisory_xact_lock(class, hashtext(tenantLockName))`
 * that serialises ClickHouse ingest deduplication across replicas (EventIngestor). The two-key
 * form lives apart from the one-key INGEST_LOCK_KEY; two tenants whose names hash alike only
 * wait for each other.
 */
export const TENANT_INGEST_LOCK_CLASS = 7_043
export const tenantLockName = (scope: { readonly tenantId: string; readonly environmentId: string }): string =>
  `${scope.tenantId}/${scope.environmentId}`

const decodeNow = Schema.decodeUnknown(Schema.Struct({ now: DbDate }))
/** The database clock's reading a statement returned (always one row), in milliseconds. */
const nowOf = (rows: ReadonlyArray<unknown>): Effect.Effect<number> => Effect.map(Effect.orDie(decodeNow(rows[0])), (r) => r.now.getTime())

export class IngestWatermark extends Effect.Service<IngestWatermark>()("flexprice/IngestWatermark", {
  effect: Effect.gen(function* () {
    const { watermarkLagSeconds } = yield* SyncConfig
    const serverMode = Option.isSome((yield* DatabaseConfig).url)
    const sql = yield* PgClient.PgClient
    const inflight = new Map<number, number>() // token → ingested_at millis
    let next = 0

    const register = <A, E, R>(stampMs: number, use: (ingestedAt: Date) => Effect.Effect<A, E, R>) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          const token = next++
          inflight.set(token, stampMs)
          return token
        }),
        () => use(new Date(stampMs)),
        (token) => Effect.sync(() => inflight.delete(token))
      )

    /** Stamp `ingestedAt` and keep it registered while `use` writes rows with that stamp. */
    const stamped = <A, E, R>(use: (ingestedAt: Date) => Effect.Effect<A, E, R>) =>
      serverMode
        ? sql.withTransaction(
            sql`SELECT pg_advisory_xact_lock_shared(${INGEST_LOCK_KEY}), clock_timestamp() AS now`.pipe(
              Effect.flatMap(nowOf),
              Effect.flatMap((now) => register(now, use))
            )
          )
        : Effect.flatMap(Clock.currentTimeMillis, (now) => register(now, use))

    /**
     * For a write that is ONE statement able to stamp itself (IngestStamp "AfterSharedLock"): on
     * a server, no transaction around it — the statement takes the shared lock and then reads the
     * clock, and its own transaction holds the lock until it commits, which is what `stamped`
     * guarantees with three round trips more (BEGIN, lock, COMMIT). `now` (the local Clock on a
     * server) is for validation only. Embedded: `stamped`, with the stamp as an instant.
     */
    const stampedByStatement = <A, E, R>(use: (now: Date, stamp: IngestStamp) => Effect.Effect<A, E, R>) =>
      serverMode
        ? Effect.flatMap(Clock.currentTimeMillis, (ms) => use(new Date(ms), { _tag: "AfterSharedLock", key: INGEST_LOCK_KEY }))
        : stamped((at) => use(at, { _tag: "At", at }))

    /** The highest instant that no in-flight or future write can still land at or below. */
    const current = Effect.gen(function* () {
      const now = serverMode
        ? // −1 ms: a writer that stamps right after us may read the same millisecond
          (yield* nowOf(yield* sql.withTransaction(sql`SELECT pg_advisory_xact_lock(${INGEST_LOCK_KEY}), clock_timestamp() AS now`))) - 1
        : yield* Clock.currentTimeMillis
      let safe = now - watermarkLagSeconds * 1000
      for (const t of inflight.values()) safe = Math.min(safe, t - 1)
      return new Date(safe)
    })

    /** Now on the clock stamps are taken from (the database's in server mode). */
    const clock = serverMode
      ? sql`SELECT clock_timestamp() AS now`.pipe(
          Effect.flatMap(nowOf),
          Effect.map((ms) => new Date(ms))
        )
      : Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

    /**
     * Read-your-writes for a manual sync: a watermark at or above `target` (an instant read from
     * `clock` when the request arrived, so every write acknowledged before it is stamped at or
     * below it). Waits out the lag and in-flight writes, at most `lag + maxExtraMs`; after that
     * answers the highest watermark reached (below `target`), and the caller reports what it
     * leaves out.
     */
    const covering = (target: Date, maxExtraMs: number) =>
      Effect.gen(function* () {
        const started = yield* Clock.currentTimeMillis
        const deadline = started + watermarkLagSeconds * 1000 + maxExtraMs
        for (;;) {
          const wm = yield* current
          const at = yield* Clock.currentTimeMillis
          if (wm.getTime() >= target.getTime() || at >= deadline) return wm
          yield* Effect.sleep(Math.max(1, Math.min(target.getTime() - wm.getTime(), deadline - at, 250)))
        }
      })

    return { stamped, stampedByStatement, current, clock, covering } as const
  })
}) {}

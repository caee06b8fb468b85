/**
 * The sync pipeline reads rows with `ingested_at <= watermark` and then never looks below that
 * watermark again for the window. A row stamped `ingested_at = T` but committed after a sync
 * chose a watermark ≥ T would be skipped for ever, so the watermark must stay below every
 * in-flight write. In process, in-flight writes register their stamp here; across replicas a
 * configurable lag (FLEXPRICE_WATERMARK_LAG_SECONDS) covers commit latency.
 */
import { Clock, Effect } from "effect"
import { SyncConfig } from "../config/AppConfig.js"

export class IngestWatermark extends Effect.Service<IngestWatermark>()("flexprice/IngestWatermark", {
  effect: Effect.gen(function* () {
    const { watermarkLagSeconds } = yield* SyncConfig
    const inflight = new Map<number, number>() // token → ingested_at millis
    let next = 0

    /** Stamp `ingestedAt` and keep it registered while `use` writes rows with that stamp. */
    const stamped = <A, E, R>(use: (ingestedAt: Date) => Effect.Effect<A, E, R>) =>
      Effect.acquireUseRelease(
        Effect.map(Clock.currentTimeMillis, (now) => {
          const token = next++
          inflight.set(token, now)
          return { token, now }
        }),
        ({ now }) => use(new Date(now)),
        ({ token }) => Effect.sync(() => inflight.delete(token))
      )

    /** The highest instant that no in-flight or future write can still land at or below. */
    const current = Effect.map(Clock.currentTimeMillis, (now) => {
      let safe = now - watermarkLagSeconds * 1000
      for (const t of inflight.values()) safe = Math.min(safe, t - 1)
      return new Date(safe)
    })

    return { stamped, current } as const
  })
}) {}

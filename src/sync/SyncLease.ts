/**
 * One runner per tenant environment at a time, across fibers and replicas: a row in
 * `sync_leases` (owner, expires_at) taken with an atomic upsert that only succeeds when the row
 * is free, expired, or already ours. Expiry uses the database clock, so replicas with skewed
 * clocks agree. A holder renews every third of the TTL; a holder that dies simply stops
 * renewing and another replica takes over after the TTL. Manual syncs take the same lease.
 */
import { PgClient } from "@effect/sql-pg"
import type { SqlError } from "@effect/sql"
import { Data, Duration, Effect, Schedule } from "effect"
import * as os from "node:os"
import { randomToken, type TenantScope } from "../domain/Ids.js"
import { SyncSettings } from "./SyncSettings.js"

/** Another owner holds the tenant's lease. */
export class LeaseBusy extends Data.TaggedError("LeaseBusy")<{ readonly tenantKey: string }> {}
/** Our lease was taken over (we stopped renewing in time): the run is interrupted. */
export class LeaseLost extends Data.TaggedError("LeaseLost")<{ readonly tenantKey: string }> {}

type Scope = Pick<TenantScope, "tenantId" | "environmentId">

export class SyncLease extends Effect.Service<SyncLease>()("flexprice/SyncLease", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const { leaseSeconds } = yield* SyncSettings
    const processId = `${os.hostname()}:${process.pid}:${randomToken(8)}`

    const tryAcquire = (scope: Scope, owner: string) =>
      sql<{ owner: string }>`INSERT INTO sync_leases (tenant_id, environment_id, owner, expires_at)
        VALUES (${scope.tenantId}, ${scope.environmentId}, ${owner}, now() + ${leaseSeconds} * interval '1 second')
        ON CONFLICT (tenant_id, environment_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE sync_leases.expires_at < now() OR sync_leases.owner = EXCLUDED.owner
        RETURNING owner`.pipe(Effect.map((rows) => rows.length > 0))

    const renew = (scope: Scope, owner: string) =>
      sql<{ owner: string }>`UPDATE sync_leases SET expires_at = now() + ${leaseSeconds} * interval '1 second'
        WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND owner = ${owner}
        RETURNING owner`.pipe(Effect.map((rows) => rows.length > 0))

    const release = (scope: Scope, owner: string) =>
      sql`DELETE FROM sync_leases
        WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND owner = ${owner}`.pipe(Effect.asVoid)

    /**
     * Runs `use` while holding the tenant's lease. Fails with LeaseBusy when another owner holds
     * it (after waiting up to `wait`), and interrupts `use` with LeaseLost if a renewal finds the
     * lease gone.
     */
    const withLease = <A, E, R>(
      scope: Scope,
      use: Effect.Effect<A, E, R>,
      options: { readonly wait?: Duration.DurationInput } = {}
    ): Effect.Effect<A, E | LeaseBusy | LeaseLost | SqlError.SqlError, R> => {
      const tenantKey = `${scope.tenantId}/${scope.environmentId}`
      const owner = `${processId}:${randomToken(8)}`
      const waitMs = Duration.toMillis(Duration.decode(options.wait ?? 0))
      const acquire = tryAcquire(scope, owner).pipe(
        Effect.filterOrFail(
          (ok) => ok,
          () => new LeaseBusy({ tenantKey })
        ),
        waitMs > 0
          ? Effect.retry({
              while: (e) => e._tag === "LeaseBusy",
              schedule: Schedule.spaced("250 millis").pipe(Schedule.upTo(Duration.millis(waitMs)))
            })
          : (x) => x
      )
      const renewLoop = renew(scope, owner).pipe(
        Effect.filterOrFail(
          (ok) => ok,
          () => new LeaseLost({ tenantKey })
        ),
        Effect.delay(Duration.millis((leaseSeconds * 1000) / 3)),
        Effect.forever
      )
      return Effect.acquireUseRelease(
        acquire,
        () => Effect.raceFirst(use, renewLoop),
        () => release(scope, owner).pipe(Effect.ignore)
      ).pipe(Effect.withSpan("sync.lease", { attributes: { tenant: tenantKey } }))
    }

    return { withLease, tryAcquire, renew, release, processId } as const
  })
}) {}

/**
 * One runner per tenant environment at a time, across fibers and replicas: a row in
 * `sync_leases` (owner, token, expires_at) taken with an atomic upsert that only succeeds when the
 * row is free, expired, or already ours. Expiry uses the database clock, so replicas with skewed
 * clocks agree. A holder renews every third of the TTL; a holder that dies simply stops
 * renewing and another replica takes over after the TTL. Manual syncs take the same lease.
 *
 * Renewal alone cannot stop a holder that was paused (GC, a stopped VM, a slow disk) past its TTL
 * from committing once it wakes: its renewal fiber was paused too. So every acquisition by a new
 * owner increments a fencing token, and the holder's `LeaseFence` is checked inside each ledger
 * transaction: the lease row is read `FOR UPDATE` with `owner = me AND token = t AND
 * expires_at > now()`. A takeover must lock the same row to change it, so either the stale
 * holder's transaction commits before the takeover (and the new holder reads its writes), or the
 * check finds the row changed and the transaction rolls back with LeaseLost. A released lease
 * keeps its row, expired, so the token only ever grows.
 */
import { PgClient } from "@effect/sql-pg"
import { type SqlError, SqlSchema } from "@effect/sql"
import { Context, Data, Duration, Effect, Option, Schedule, Schema } from "effect"
import { orDieOnRow } from "../db/Rows.js"
import * as os from "node:os"
import { randomToken, type TenantScope } from "../domain/Ids.js"
import { SyncSettings } from "./SyncSettings.js"
import { inTenant } from "../db/RowSecurity.js"

/** Another owner holds the tenant's lease. */
export class LeaseBusy extends Data.TaggedError("LeaseBusy")<{ readonly tenantKey: string }> {}
/** Our lease was taken over (we stopped renewing in time): the run is interrupted. */
export class LeaseLost extends Data.TaggedError("LeaseLost")<{ readonly tenantKey: string }> {}

type Scope = Pick<TenantScope, "tenantId" | "environmentId">

/**
 * The current holder's fence, provided to the effect run under `withLease`. `check` belongs
 * inside a ledger transaction: it locks the lease row until the transaction ends and fails with
 * LeaseLost when another owner took the lease over (or it expired).
 */
export class LeaseFence extends Context.Tag("flexprice/LeaseFence")<
  LeaseFence,
  { readonly token: bigint; readonly check: Effect.Effect<void, LeaseLost | SqlError.SqlError> }
>() {}

/** Checks the current fence, if any (runs outside a lease — tests, dry runs — check nothing). */
export const checkFence: Effect.Effect<void, LeaseLost | SqlError.SqlError> = Effect.flatMap(
  Effect.serviceOption(LeaseFence),
  Option.match({ onNone: () => Effect.void, onSome: (fence) => fence.check })
)

export class SyncLease extends Effect.Service<SyncLease>()("flexprice/SyncLease", {
  effect: Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const { leaseSeconds } = yield* SyncSettings
    const processId = `${os.hostname()}:${process.pid}:${randomToken(8)}`

    const acquired = SqlSchema.findOne({
      Request: Schema.Struct({ tenantId: Schema.String, environmentId: Schema.String, owner: Schema.String }),
      // bigint read as text: exact whatever the driver does with int8
      Result: Schema.Struct({ token: Schema.BigInt }),
      execute: ({ tenantId, environmentId, owner }) => sql`INSERT INTO sync_leases (tenant_id, environment_id, owner, token, expires_at)
        VALUES (${tenantId}, ${environmentId}, ${owner}, 1, now() + ${leaseSeconds} * interval '1 second')
        ON CONFLICT (tenant_id, environment_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at,
          token = CASE WHEN sync_leases.owner = EXCLUDED.owner THEN sync_leases.token ELSE sync_leases.token + 1 END
        WHERE sync_leases.expires_at < now() OR sync_leases.owner = EXCLUDED.owner
        RETURNING token::text AS token`
    })
    /** The fencing token when acquired (a new owner always gets a larger one), None when busy. */
    const acquireToken = (scope: Scope, owner: string): Effect.Effect<Option.Option<bigint>, SqlError.SqlError> =>
      orDieOnRow(acquired({ tenantId: scope.tenantId, environmentId: scope.environmentId, owner })).pipe(
        Effect.map(Option.map((r) => r.token)),
        inTenant(scope)
      )

    const tryAcquire = (scope: Scope, owner: string) => Effect.map(acquireToken(scope, owner), Option.isSome)

    const fenceOf = (scope: Scope, owner: string, token: bigint): Context.Tag.Service<typeof LeaseFence> => {
      const tenantKey = `${scope.tenantId}/${scope.environmentId}`
      return {
        token,
        check: sql<{ owner: string }>`SELECT owner FROM sync_leases
          WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId}
            AND owner = ${owner} AND token = ${token.toString()}::bigint AND expires_at > now()
          FOR UPDATE`.pipe(
          Effect.filterOrFail(
            (rows) => rows.length > 0,
            () => new LeaseLost({ tenantKey })
          ),
          Effect.asVoid,
          inTenant(scope)
        )
      }
    }

    const renew = (scope: Scope, owner: string) =>
      sql<{ owner: string }>`UPDATE sync_leases SET expires_at = now() + ${leaseSeconds} * interval '1 second'
        WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND owner = ${owner}
        RETURNING owner`.pipe(
        Effect.map((rows) => rows.length > 0),
        inTenant(scope)
      )

    const release = (scope: Scope, owner: string) =>
      sql`UPDATE sync_leases SET expires_at = now() - interval '1 second'
        WHERE tenant_id = ${scope.tenantId} AND environment_id = ${scope.environmentId} AND owner = ${owner}`.pipe(
        Effect.asVoid,
        inTenant(scope)
      )

    /**
     * Runs `use` while holding the tenant's lease, with the holder's LeaseFence provided. Fails
     * with LeaseBusy when another owner holds it (after waiting up to `wait`), and interrupts
     * `use` with LeaseLost if a renewal finds the lease gone.
     */
    const withLease = <A, E, R>(
      scope: Scope,
      use: Effect.Effect<A, E, R>,
      options: { readonly wait?: Duration.DurationInput } = {}
    ): Effect.Effect<A, E | LeaseBusy | LeaseLost | SqlError.SqlError, Exclude<R, LeaseFence>> => {
      const tenantKey = `${scope.tenantId}/${scope.environmentId}`
      const owner = `${processId}:${randomToken(8)}`
      const waitMs = Duration.toMillis(Duration.decode(options.wait ?? 0))
      const acquire = acquireToken(scope, owner).pipe(
        Effect.flatMap(
          Option.match({
            onNone: () => Effect.fail(new LeaseBusy({ tenantKey })),
            onSome: (token) => Effect.succeed(token)
          })
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
        (token) => Effect.raceFirst(Effect.provideService(use, LeaseFence, fenceOf(scope, owner, token)), renewLoop),
        () => release(scope, owner).pipe(Effect.ignore)
      ).pipe(Effect.withSpan("SyncLease.withLease", { attributes: { tenant: tenantKey } }))
    }

    return { withLease, tryAcquire, acquireToken, fenceOf, renew, release, processId } as const
  })
}) {}

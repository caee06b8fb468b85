/**
 * The requirements' environment variables, read through a ConfigProvider (never by mutating
 * process.env), and what each one does here:
 * - STRIPE_SYNC_GRACE_PERIOD_MINUTES (5): the grace of a tenant environment whose config does not
 *   set one when it is first stored; the stored value then decides when its windows are due (a
 *   later change of the variable does not move existing tenants' windows).
 * - STRIPE_BATCH_SIZE_LIMIT (10000, at most 10000): aggregate groups per aggregation page — the
 *   unit read from the event store and written to the ledger in one step. A group is one
 *   (customer, meter, event type) of a window, i.e. one meter event; the raw events inside a
 *   group are not limited (Stripe receives their sum).
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Clock, ConfigProvider, Effect, Either, Redacted } from "effect"
import { formatConfigError, SyncConfig } from "../../src/config/AppConfig.js"
import { ApiClient } from "../support/TestApp.js"
import { STRIPE_KEY } from "../sync/support.js"
import { customer, ingest, meter, stripeTotal, sync, syncLayer } from "../sync/syncLayer.js"

const read = (vars: Record<string, string>) =>
  SyncConfig.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars)))), Effect.either)

describe("STRIPE_SYNC_GRACE_PERIOD_MINUTES and STRIPE_BATCH_SIZE_LIMIT from the environment", () => {
  it.effect("defaults are the requirements' (5 minutes, 10000)", () =>
    Effect.gen(function* () {
      const c = yield* read({})
      expect(Either.isRight(c) && [c.right.gracePeriodMinutes, c.right.batchSizeLimit]).toEqual([5, 10_000])
    })
  )

  it.effect("values are read from the variables", () =>
    Effect.gen(function* () {
      const c = yield* read({ STRIPE_SYNC_GRACE_PERIOD_MINUTES: "12", STRIPE_BATCH_SIZE_LIMIT: "250" })
      expect(Either.isRight(c) && [c.right.gracePeriodMinutes, c.right.batchSizeLimit]).toEqual([12, 250])
    })
  )

  it.effect("bad values stop start-up with the variable's name", () =>
    Effect.gen(function* () {
      for (const [name, bad] of [
        ["STRIPE_SYNC_GRACE_PERIOD_MINUTES", "-1"],
        ["STRIPE_SYNC_GRACE_PERIOD_MINUTES", "five"],
        ["STRIPE_BATCH_SIZE_LIMIT", "0"],
        ["STRIPE_BATCH_SIZE_LIMIT", "10001"]
      ] as const) {
        const c = yield* read({ [name]: bad })
        expect(Either.isLeft(c), `${name}=${bad}`).toBe(true)
        if (Either.isLeft(c)) expect(formatConfigError(c.left)).toContain(name)
      }
    })
  )
})

// the service reads its environment through ConfigProvider.fromMap (test/support/TestApp.ts)
layer(syncLayer({ env: { STRIPE_SYNC_GRACE_PERIOD_MINUTES: "17", STRIPE_BATCH_SIZE_LIMIT: "2" } }), { excludeTestServices: true })(
  "STRIPE_SYNC_GRACE_PERIOD_MINUTES seeds a new tenant's grace; STRIPE_BATCH_SIZE_LIMIT pages",
  (it) => {
    it.effect("a config stored without grace_period_minutes gets the variable's value; an explicit one wins", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const grace = Effect.map(api.stripeConfig.getConfig(), (c) => c.grace_period_minutes)
        const [, put] = yield* api.stripeConfig.putConfig({ payload: { api_key: Redacted.make(STRIPE_KEY) }, withResponse: true })
        expect(put.status).toBe(200)
        expect(yield* grace).toBe(17)
        // a later update that does not name the grace keeps the stored one
        yield* api.stripeConfig.putConfig({ payload: { transport: "v1" } })
        expect(yield* grace).toBe(17)
        yield* api.stripeConfig.putConfig({ payload: { grace_period_minutes: 3 } })
        expect(yield* grace).toBe(3)
      })
    )

    it.effect("a window with more groups than STRIPE_BATCH_SIZE_LIMIT is aggregated in pages and fully synced", () =>
      Effect.gen(function* () {
        // on the config the previous test stored over the API (v1 transport, 3 minutes' grace)
        const m = yield* meter("paged", { aggregation: "COUNT" })
        const customers = 5
        const ids: Array<string> = []
        for (let i = 0; i < customers; i++) ids.push((yield* customer(`pg${i}`)).stripeId)
        const hour = Math.floor((yield* Clock.currentTimeMillis) / 3_600_000) * 3_600_000 - 2 * 3_600_000
        yield* ingest(
          Array.from({ length: customers * 3 }, (_, i) => ({
            event_id: `pg-${i}`,
            event_name: m.eventName,
            external_customer_id: `pg${i % customers}`,
            timestamp: new Date(hour + i * 1000).toISOString()
          }))
        )
        const report = yield* sync()
        expect(report.windows.map((w) => w.groups)).toEqual([customers])
        expect(report.batchesSynced).toBe(customers)
        for (const id of ids) expect(yield* stripeTotal(id, m.stripeEventName)).toBe("3")
      })
    )
  }
)

/**
 * Issue #12 item 9: a rolled key or a refused stream request must not burn batches' retry cap.
 *
 * - A Stripe authentication failure (the emulator's rolled key answers 401 `api_key_expired`,
 *   https://docs.stripe.com/keys#rolling-keys) pauses the tenant's push: no attempt is charged,
 *   the status says why, and the push resumes once the configuration changes.
 * - A stream request Stripe refuses as a whole (400: one invalid event refuses the request,
 *   https://docs.stripe.com/api/v2/billing/meter-event-stream/create) is not charged to every
 *   batch of the chunk: the chunk is split until the refused batch is alone.
 *
 * Expected totals come from the raw events (test/support/oracle.ts).
 */
import { layer } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { describe, expect } from "vitest"
import type { EventInput } from "../../src/domain/Models.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { ApiClient, inTestTenant } from "../support/TestApp.js"
import { hoursAgo } from "./support.js"
import { batches, configure, customer, expectTotals, ingest, meter, sync, SyncEmulator, syncLayer, syncLayerValidating } from "./syncLayer.js"

/** FLEXPRICE_SYNC_MAX_RETRIES default: runs after which a failed batch is left alone. */
const RETRY_CAP = 5

forEachBackend(["pglite", "postgres"], (backend) => {
  // one service per test: a rolled key stays rolled in its emulator
  describe(`auth failures and refused requests on ${backend}`, () => {
    for (const transport of ["stream", "v1"] as const) {
      // Telemetry.layerTest beside the service (its metric reader for the counter below), not
      // beneath it: the service keeps its own tracer instead of recording every span in memory
      layer(Layer.merge(syncLayer({ backend }), Telemetry.layerTest), { excludeTestServices: true })((it) => {
        it.effect(`a rolled key pauses the ${transport} push without charging attempts; a new key resumes it exactly`, () =>
          Effect.gen(function* () {
            const emulator = yield* SyncEmulator
            const api = yield* ApiClient
            const telemetry = yield* TelemetryTest
            // the StripeAuthenticationFailures alert reads this counter (metrics are process-global: compare)
            const authErrors = telemetry.metricValue("flexprice_errors_total", { code: "stripe_authentication_failed", area: "sync" })
            yield* configure({ transport })
            const m = yield* meter("calls", { aggregation: "SUM", field: "q" })
            const customers = [yield* customer("a"), yield* customer("b"), yield* customer("c")]
            const expected = new Map<string, Array<string>>()
            const events: Array<EventInput> = []
            let n = 0
            for (const [i, c] of customers.entries())
              for (const hour of [3, 2]) {
                const q = `${i + 1}.${hour}5`
                events.push({ event_id: `e${n++}`, event_name: "calls", external_customer_id: ["a", "b", "c"][i]!, timestamp: hoursAgo(hour, 7), properties: { q } })
                const k = `${c.stripeId}|${m.stripeEventName}`
                expected.set(k, [...(expected.get(k) ?? []), q])
              }
            // the first hour is synced with the working key (the run reads the Stripe meter too)
            yield* ingest(events.filter((_, i) => i % 2 === 0))
            expect((yield* sync()).status).toBe("completed")

            const newKey = yield* emulator.rollKey(0)
            // a stream session opened before the roll stays valid to its expiry; expire it so the
            // next request needs a session created with the (now expired) key
            yield* emulator.expireSessions()
            yield* ingest(events.filter((_, i) => i % 2 === 1))
            const runs = []
            for (let i = 0; i < RETRY_CAP + 2; i++) runs.push(yield* sync())
            const open = (yield* batches).filter((b) => b.syncStatus !== "synced")
            expect(open.length).toBe(3)
            // no attempt charged: the batches wait, they are not failed or capped
            expect(open.map((b) => [b.syncStatus, b.retryCount])).toEqual([
              ["pending", 0],
              ["pending", 0],
              ["pending", 0]
            ])
            expect(runs.every((r) => r.status === "partial" && r.batchesFailed === 0)).toBe(true)
            expect(runs.at(-1)!.error).toBe("sync_paused")
            // the status says why
            const status = yield* api.sync.status()
            expect(status.paused).toMatchObject({ code: "stripe_authentication_failed" })
            expect(typeof status.paused?.since).toBe("string")
            // paused: later runs do not call Stripe's meter event endpoints again, and each counts
            // the pause's code so the alert keeps firing while it lasts
            emulator.resetCounters()
            const errorsBefore = yield* authErrors
            yield* sync()
            expect((yield* authErrors) - errorsBefore).toBe(1)
            const calls = emulator.callCounts()
            expect(Object.keys(calls).filter((p) => p.includes("meter_event"))).toEqual([])

            // the fix: a new key through the config API lifts the pause
            const [, put] = yield* api.stripeConfig.putConfig({ payload: { api_key: Redacted.make(newKey) }, withResponse: true })
            expect(put.status).toBe(200)
            expect((yield* api.sync.status()).paused).toBeNull()
            const after = yield* sync()
            expect(after.status).toBe("completed")
            expect(yield* expectTotals(new Map([...expected].map(([k, v]) => [k, O.format(O.sum(v))])))).toEqual([])
          })
        )
      })
    }

    layer(syncLayerValidating("sync", { backend }), { excludeTestServices: true })((it) => {
      it.effect("a stream request refused as a whole charges only the batch Stripe refused", () =>
        Effect.gen(function* () {
          yield* configure({ transport: "stream" })
          const m = yield* meter("tokens", { aggregation: "SUM", field: "t" })
          const expected = new Map<string, string>()
          const events: Array<EventInput> = []
          for (let i = 0; i < 12; i++) {
            const c = yield* customer(`c${i}`)
            const q = `${i}.5`
            events.push({ event_id: `t${i}`, event_name: "tokens", external_customer_id: `c${i}`, timestamp: hoursAgo(2, 10), properties: { t: q } })
            expected.set(`${c.stripeId}|${m.stripeEventName}`, O.format(O.sum([q])))
          }
          // a customer mapped to a Stripe customer that does not exist: Stripe refuses its event
          const bad = yield* (yield* ApiClient).customers.create({ payload: { external_id: "ghost" } })
          yield* inTestTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId: bad.id, providerCustomerId: "cus_DoesNotExist000", source: "api" })))
          events.push({ event_id: "g", event_name: "tokens", external_customer_id: "ghost", timestamp: hoursAgo(2, 11), properties: { t: "99" } })
          yield* ingest(events)

          const first = yield* sync()
          const rows = yield* batches
          const failed = rows.filter((b) => b.syncStatus === "failed")
          expect(failed.map((b) => [b.customerId, b.retryCount])).toEqual([[bad.id, 1]])
          expect(rows.filter((b) => b.syncStatus === "synced").length).toBe(12)
          expect(first.batchesFailed).toBe(1)
          expect(yield* expectTotals(expected)).toEqual([])
        })
      )
    })
  })
})

/**
 * The push reads pending batches in keyset pages (FLEXPRICE_SYNC_PUSH_PAGE_SIZE, default 2000).
 * With pages of 7, 30 batches take five pages (7, 7, 7, 7, 2) and the late deltas more pages
 * again: no batch may be skipped or sent twice at a page boundary. Quantities mix 12-decimal
 * values and values ≥ 10^12; expected totals come from the BigInt oracle on the generated events.
 * "Sent twice" is counted on what the emulator received, duplicates it ignored included.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import type { EventInput } from "../../src/domain/Models.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo, prng } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

const PAGE = 7
const STREAM = "POST /v2/billing/meter_event_stream"

forEachBackend(["pglite", "postgres"], (backend) =>
  layer(syncLayer({ backend, env: { FLEXPRICE_SYNC_PUSH_PAGE_SIZE: String(PAGE) } }), { excludeTestServices: true })(`push pages of ${PAGE} (${backend})`, (it) => {
    const rand = prng(19)

    /**
     * A tokens quantity for customer `i`: even customers get integers in [10^12, 10^13)
     * (a window of them stays within Stripe's 15 significant digits), odd ones 12-decimal
     * fractions below 1 — both kinds in every page.
     */
    const qty = (i: number): string => {
      const draw = BigInt(Math.floor(rand() * 1e9)) * 1000n + BigInt(Math.floor(rand() * 1000))
      return i % 2 === 0
        ? O.format({ unscaled: 10n ** 12n + (draw % (9n * 10n ** 12n)), scale: 0 })
        : O.format({ unscaled: 1n + (draw % 10n ** 11n), scale: 12 })
    }

    it.effect("sends 30 batches over five pages exactly once, then late deltas over more pages", () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        yield* configure()
        const calls = yield* meter("api_calls", { aggregation: "COUNT" })
        const tokens = yield* meter("tokens", { aggregation: "SUM", field: "tokens" })
        const customers: Array<{ externalId: string; stripeId: string }> = []
        for (let i = 0; i < 5; i++) {
          const c = yield* customer(`pp${i}`)
          customers.push({ externalId: `pp${i}`, stripeId: c.stripeId })
        }
        const expected = new Map<string, Array<string>>()

        const usage = (prefix: string, hours: ReadonlyArray<number>, perPair: number) => {
          const events: Array<EventInput> = []
          customers.forEach((c, i) => {
            for (const hAgo of hours) {
              for (let n = 0; n < perPair; n++) {
                const timestamp = hoursAgo(hAgo, Math.floor(rand() * 60))
                const q = qty(i)
                events.push({ event_id: `${prefix}-${c.externalId}-${hAgo}-${n}`, event_name: "tokens", external_customer_id: c.externalId, timestamp, properties: { tokens: q } })
                events.push({ event_id: `${prefix}-${c.externalId}-${hAgo}-${n}-call`, event_name: "api_calls", external_customer_id: c.externalId, timestamp })
                const kt = `${c.stripeId}|${tokens.stripeEventName}`
                const kc = `${c.stripeId}|${calls.stripeEventName}`
                expected.set(kt, [...(expected.get(kt) ?? []), q])
                expected.set(kc, [...(expected.get(kc) ?? []), "1"])
              }
            }
          })
          return events
        }

        const expectTotals = Effect.gen(function* () {
          for (const [k, qs] of expected) {
            const [stripeId, eventName] = k.split("|") as [string, string]
            expect(yield* stripeTotal(stripeId, eventName), k).toBe(O.format(O.sum(qs)))
          }
        })

        /** Every identifier received exactly once, and nothing the emulator ignored as a duplicate. */
        const expectReceivedOnce = (n: number) => {
          const received = emulator.state.received()
          expect(received.length).toBe(n)
          expect(received.filter((r) => r.outcome === "duplicate")).toEqual([])
          expect(new Set(received.map((r) => r.identifier)).size).toBe(n)
        }

        // 5 customers × 2 meters × 3 hours = 30 batches
        yield* ingest(usage("a", [2, 3, 4], 3))
        const first = yield* sync()
        expect(first.status).toBe("completed")
        expect(first.batchesCreated).toBe(30)
        expect(first.batchesSynced).toBe(30)
        expect(first.batchesFailed).toBe(0)
        // a stream request never spans two pages: at least ceil(30 / 7) = 5 of them (one with the
        // default page size)
        expect(emulator.callCounts()[STREAM] ?? 0).toBeGreaterThanOrEqual(Math.ceil(30 / PAGE))
        expectReceivedOnce(30)
        yield* expectTotals

        // late events for two of the hours: 5 × 2 × 2 = 20 delta batches (sequence 2), three pages
        const streamBefore = emulator.callCounts()[STREAM] ?? 0
        yield* ingest(usage("b", [2, 4], 2))
        const second = yield* sync()
        expect(second.status).toBe("completed")
        expect(second.batchesCreated).toBe(20)
        expect(second.batchesSynced).toBe(20)
        expect((emulator.callCounts()[STREAM] ?? 0) - streamBefore).toBeGreaterThanOrEqual(Math.ceil(20 / PAGE))
        expectReceivedOnce(50)
        yield* expectTotals
        const all = yield* batches
        expect(all.length).toBe(50)
        expect(all.every((b) => b.syncStatus === "synced")).toBe(true)
        expect(all.filter((b) => b.sequence === 2).length).toBe(20)

        // nothing left: a third run reads one empty page and sends nothing
        const third = yield* sync()
        expect(third.batchesCreated).toBe(0)
        expect(third.stripeRequests).toBe(0)
        expectReceivedOnce(50)
      })
    )
  })
)

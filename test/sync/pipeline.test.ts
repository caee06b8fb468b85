/**
 * The pipeline end to end on every event-store backend: the real service, the real StripeClient
 * and the emulator over HTTP. Expected totals are computed independently from the generated raw
 * events with the BigInt oracle (test/support/oracle.ts), never from the ledger or src/domain/Decimal.
 *
 * The tests run in order on one service per backend, set up with two meters and 25 mapped
 * customers before them; each later test builds on the ledger the earlier ones left.
 */
import { layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { expect } from "vitest"
import type { EventInput } from "../../src/domain/Models.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { ApiClient } from "../support/TestApp.js"
import { hoursAgo, type MeterSetup, prng, randomQty } from "./support.js"
import { batches, configure, customer, ingest, mapCustomer, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

/** What the suite's service is set up with before its tests. */
class Setup extends Context.Tag("test/PipelineSetup")<Setup, {
  readonly calls: MeterSetup
  readonly tokens: MeterSetup
  readonly customers: ReadonlyArray<{ readonly externalId: string; readonly customerId: string; readonly stripeId: string }>
}>() {}

const setup = Layer.effect(
  Setup,
  Effect.gen(function* () {
    yield* configure()
    const calls = yield* meter("api_calls", { aggregation: "COUNT" })
    const tokens = yield* meter("tokens", { aggregation: "SUM", field: "tokens" })
    const customers: Array<{ externalId: string; customerId: string; stripeId: string }> = []
    for (let i = 0; i < 25; i++) {
      const externalId = `c${i}`
      const c = yield* customer(externalId)
      customers.push({ externalId, customerId: c.customerId, stripeId: c.stripeId })
    }
    return { calls, tokens, customers }
  })
)

forEachBackend(["pglite", "postgres", "clickhouse"], (backend) =>
  layer(setup.pipe(Layer.provideMerge(syncLayer({ backend }))), { excludeTestServices: true })(`sync pipeline (${backend})`, (it) => {
    it.effect("sends exactly the raw totals for many customers and meters, and a re-run sends nothing new", () =>
      Effect.gen(function* () {
        const emulator = yield* SyncEmulator
        const { calls, tokens, customers } = yield* Setup
        const rand = prng(7)
        const expected = new Map<string, Array<string>>()
        const events: Array<EventInput> = []
        for (let i = 0; i < 3000; i++) {
          const c = customers[Math.floor(rand() * customers.length)]!
          const timestamp = hoursAgo(2 + Math.floor(rand() * 4), Math.floor(rand() * 60))
          if (rand() < 0.5) {
            events.push({ event_id: `e${i}`, event_name: "api_calls", external_customer_id: c.externalId, timestamp })
            const k = `${c.stripeId}|${calls.stripeEventName}`
            expected.set(k, [...(expected.get(k) ?? []), "1"])
          } else {
            const qty = randomQty(rand)
            events.push({ event_id: `e${i}`, event_name: "tokens", external_customer_id: c.externalId, timestamp, properties: { tokens: qty } })
            const k = `${c.stripeId}|${tokens.stripeEventName}`
            expected.set(k, [...(expected.get(k) ?? []), qty])
          }
        }
        // a re-sent event_id counts once
        yield* ingest(events)
        yield* ingest(events.slice(0, 200))

        const report = yield* sync()
        expect(report.status).toBe("completed")
        expect(report.batchesFailed).toBe(0)
        expect(report.batchesCreated).toBeGreaterThan(100)
        expect(report.batchesSynced).toBe(report.batchesCreated)
        for (const [k, qs] of expected) {
          const [stripeId, eventName] = k.split("|") as [string, string]
          expect(yield* stripeTotal(stripeId, eventName), k).toBe(O.format(O.sum(qs)))
        }
        const grand = O.format(O.sum([...expected.values()].flat()))
        expect(O.format(O.sum(emulator.state.totals().map((t) => t.sum)))).toBe(grand)
        // one meter event per (customer, meter, window), timestamps at the window start
        const accepted = emulator.state.meterEvents()
        expect(accepted.length).toBe(report.batchesSynced)
        for (const e of accepted) expect(e.timestamp % 3600).toBe(0)
        // stream transport: ≤ 100 events a request
        expect(report.stripeRequests).toBeLessThanOrEqual(Math.ceil(report.batchesSynced / 100) + 4)

        const eventsBefore = emulator.state.meterEvents().length
        const callsBefore = emulator.totalCalls()
        const again = yield* sync()
        expect(again.batchesCreated).toBe(0)
        expect(again.batchesSynced).toBe(0)
        expect(again.stripeRequests).toBe(0)
        expect(emulator.state.meterEvents().length).toBe(eventsBefore)
        expect(emulator.totalCalls()).toBe(callsBefore)
        const all = yield* batches
        expect(all.every((b) => b.syncStatus === "synced" && b.syncedAt !== null && b.sequence === 1)).toBe(true)
      })
    )

    it.effect("a late event yields exactly one delta batch with the next sequence", () =>
      Effect.gen(function* () {
        const { customers, tokens } = yield* Setup
        const c = customers[0]!
        const before = yield* stripeTotal(c.stripeId, tokens.stripeEventName)
        const ts = hoursAgo(3, 10)
        yield* ingest([{ event_id: "late-1", event_name: "tokens", external_customer_id: c.externalId, timestamp: ts, properties: { tokens: "12.345" } }])
        const r = yield* sync()
        expect(r.batchesCreated).toBe(1)
        expect(r.batchesSynced).toBe(1)
        expect(yield* stripeTotal(c.stripeId, tokens.stripeEventName)).toBe(O.format(O.add(before, "12.345")))
        const windowStart = new Date(Math.floor(Date.parse(ts) / 3_600_000) * 3_600_000).getTime()
        const inWindow = (yield* batches).filter(
          (b) => b.customerId === c.customerId && b.meterId === tokens.meterId && b.windowStart.getTime() === windowStart
        )
        const delta = inWindow.find((b) => b.aggregatedQuantity === "12.345")!
        expect(delta).toBeDefined()
        expect(delta.sequence).toBeGreaterThan(1)
        expect(delta.ingestedAfter).not.toBeNull()
        expect(new Set(inWindow.map((b) => b.identifier)).size).toBe(inWindow.length)
        // and again: nothing
        const r2 = yield* sync()
        expect(r2.batchesCreated).toBe(0)
        expect(r2.stripeRequests).toBe(0)
      })
    )

    it.effect("holds unmapped usage as skipped/no_mapping and sends it once the mapping exists", () =>
      Effect.gen(function* () {
        const { tokens } = yield* Setup
        const u = yield* (yield* ApiClient).customers.create({ payload: { external_id: "unmapped-1" } })
        yield* ingest([
          { event_id: "u1", event_name: "tokens", external_customer_id: "unmapped-1", timestamp: hoursAgo(4, 5), properties: { tokens: "3.5" } },
          { event_id: "u2", event_name: "tokens", external_customer_id: "unmapped-1", timestamp: hoursAgo(2, 5), properties: { tokens: "1.25" } }
        ])
        const r1 = yield* sync()
        expect(r1.batchesCreated).toBe(2)
        expect(r1.batchesSynced).toBe(0)
        const held = (yield* batches).filter((b) => b.customerId === u.id)
        expect(held.map((b) => [b.syncStatus, b.skipReason])).toEqual([
          ["skipped", "no_mapping"],
          ["skipped", "no_mapping"]
        ])
        // still no mapping: re-evaluated, nothing sent
        const r2 = yield* sync()
        expect(r2.batchesSynced).toBe(0)
        const stripeId = yield* mapCustomer(u.id)
        const r3 = yield* sync()
        expect(r3.batchesSynced).toBe(2)
        expect(yield* stripeTotal(stripeId, tokens.stripeEventName)).toBe("4.75")
        const r4 = yield* sync()
        expect(r4.batchesSynced).toBe(0)
        expect(yield* stripeTotal(stripeId, tokens.stripeEventName)).toBe("4.75")
      })
    )
  })
)

/**
 * The ledger's archive (issue #18 item 5): batches past the retention horizon move into
 * per-(customer, meter, hour) summaries, and what reads the ledger cannot tell: whole-unit
 * carries, reconciliation's hourly figures and the status counts are the same before and after,
 * and usage synced after an archive still completes whole units exactly as the raw events say
 * (expected values from the oracle, never from product code). On PGlite and PostgreSQL; the
 * ledger is partitioned by month on both.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import type { EventInput } from "../../src/domain/Models.js"
import { archiveLedgerAt, archiveCutoff } from "../../src/db/Retention.js"
import { SyncBatchRepo } from "../../src/repositories/SyncBatchRepo.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { inTestTenant, TestTenant } from "../support/TestApp.js"
import { HOUR, hoursAgo, prng, randomQty } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, syncLayer, syncUntilSettled } from "./syncLayer.js"

const DAY = 86_400_000

describe("archive cutoff", () => {
  it("is an hour boundary at least one hour before the horizon", () => {
    const now = Date.UTC(2026, 11, 2, 10, 37, 12)
    const cut = archiveCutoff(now, 35)
    expect(cut.toISOString()).toBe("2026-10-28T09:00:00.000Z")
    expect(now - cut.getTime()).toBeGreaterThan(35 * DAY + HOUR)
  })
})

forEachBackend(["pglite", "postgres"], (backend) =>
  describe(`ledger archive (${backend})`, () => {
    // one service per test, as each archives the whole ledger
    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect(
        "keeps carries, reconciliation totals and counts across an archive; later usage completes whole units",
        () =>
          Effect.gen(function* () {
            yield* configure({ transport: "stream" })
            const m = yield* meter("gb", { aggregation: "SUM", field: "gb", wholeUnits: true })
            const customers: Array<{ externalId: string; customerId: string; stripeId: string }> = []
            for (const externalId of ["arc_a", "arc_b", "arc_c"]) customers.push({ externalId, ...(yield* customer(externalId)) })
            const rand = prng(18)
            const raw = new Map<string, Array<string>>()
            let n = 0
            const usage = (hours: ReadonlyArray<number>, count: number) =>
              Array.from({ length: count }, (): EventInput => {
                const c = customers[Math.floor(rand() * customers.length)]!
                const qty = randomQty(rand)
                raw.set(c.stripeId, [...(raw.get(c.stripeId) ?? []), qty])
                return {
                  event_id: `arc_e${n++}`,
                  event_name: m.eventName,
                  external_customer_id: c.externalId,
                  timestamp: hoursAgo(hours[Math.floor(rand() * hours.length)]!, Math.floor(rand() * 60)),
                  properties: { gb: qty }
                }
              })
            yield* ingest(usage([3, 4, 5], 120))
            yield* syncUntilSettled(10, Effect.void)

            const ids = customers.map((c) => c.customerId)
            const reads = inTestTenant(
              Effect.gen(function* () {
                const repo = yield* SyncBatchRepo
                return {
                  outstanding: Object.fromEntries([...(yield* repo.outstanding(ids, [m.meterId]))].sort()),
                  hourly: (yield* repo.syncedHourly(new Date(Math.floor(Date.now() / HOUR - 8) * HOUR), new Date(Math.ceil(Date.now() / HOUR + 1) * HOUR))).map((r) => ({
                    ...r,
                    hour: r.hour.toISOString()
                  })),
                  counts: (yield* repo.statusCounts).filter((c) => c.status === "synced" || c.status === "skipped").map((c) => [c.status, c.count])
                }
              })
            )
            const before = yield* reads
            // the oracle: what each customer still owes Stripe is its raw total's fraction
            for (const c of customers) {
              const total = O.sum(raw.get(c.stripeId) ?? [])
              expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe(O.format(O.floor(total)))
            }
            const owedByOracle = Object.fromEntries(
              customers
                .map((c) => {
                  const total = O.sum(raw.get(c.stripeId) ?? [])
                  return [c.customerId, O.format(O.sub(total, O.floor(total)))] as const
                })
                .filter(([, owed]) => owed !== "0")
                .map(([id, owed]) => [`${id}\u0000${m.meterId}`, owed])
                .sort()
            )
            expect(before.outstanding).toEqual(owedByOracle)
            const ledgerSize = (yield* batches).length
            expect(ledgerSize).toBeGreaterThan(0)

            // the retention pass as it would run 40 days from now: every batch is past the horizon
            const pass = yield* archiveLedgerAt(Date.now() + 40 * DAY)
            expect(pass.batches).toBe(ledgerSize)
            expect(yield* batches).toEqual([])
            expect(yield* reads).toEqual(before)

            // new usage: its batches start from the archived carry. Two hours back, not one: the last
            // hour's window is due only 5 minutes (the grace) after the hour, so a run in those minutes
            // would leave it out.
            yield* ingest(usage([2], 30))
            yield* syncUntilSettled(10, Effect.void)
            for (const c of customers) {
              const total = O.sum(raw.get(c.stripeId) ?? [])
              expect(yield* stripeTotal(c.stripeId, m.stripeEventName)).toBe(O.format(O.floor(total)))
            }

            // archiving again adds to the same summaries (additive upsert), still exact
            const again = yield* archiveLedgerAt(Date.now() + 40 * DAY)
            expect(again.batches).toBeGreaterThan(0)
            const after = yield* reads
            expect(after.outstanding).toEqual(
              Object.fromEntries(
                customers
                  .map((c) => {
                    const total = O.sum(raw.get(c.stripeId) ?? [])
                    return [`${c.customerId}\u0000${m.meterId}`, O.format(O.sub(total, O.floor(total)))] as const
                  })
                  .filter(([, owed]) => owed !== "0")
                  .sort()
              )
            )
          }),
        180_000
      )
    })

    layer(syncLayer({ backend }), { excludeTestServices: true })((it) => {
      it.effect("partitions the ledger by month; months past the horizon that emptied are dropped", () =>
        Effect.gen(function* () {
          const sql = yield* PgClient.PgClient
          const { scope } = yield* TestTenant
          const partitions = Effect.map(
            sql<{ name: string }>`SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'stripe_sync_batches'::regclass ORDER BY 1`,
            (rows) => rows.map((r) => r.name)
          )
          const month = (d: Date) => `stripe_sync_batches_p${d.toISOString().slice(0, 7).replace("-", "")}`
          const now = new Date()
          const start = yield* partitions
          expect(start).toContain("stripe_sync_batches_default")
          expect(start).toContain(month(now))
          // a year on: the coming months exist, the (empty) current one is gone
          const later = new Date(Date.UTC(now.getUTCFullYear() + 1, now.getUTCMonth(), 15))
          const pass = yield* archiveLedgerAt(later.getTime())
          expect(pass.partitionsCreated).toBeGreaterThan(0)
          const end = yield* partitions
          expect(end).toContain(month(later))
          expect(end).toContain(month(new Date(Date.UTC(later.getUTCFullYear(), later.getUTCMonth() + 2, 1))))
          expect(end).not.toContain(month(now))
          // the exactly-once key holds across partitions: the same (…, window_start, sequence) twice fails
          const insert = (id: string) =>
            Effect.either(
              sql`INSERT INTO stripe_sync_batches (id, tenant_id, environment_id, customer_id, meter_id, event_type, window_start,
                  window_end, sequence, aggregated_quantity, event_count, identifier, sync_status, watermark)
                VALUES (${id}, ${scope.tenantId}, ${scope.environmentId}, 'c', 'm', 'ev', ${later}, ${later}, 1, 1, 1, 'i', 'pending', ${later})`
            )
          expect((yield* insert("ssb_one"))._tag).toBe("Right")
          expect((yield* insert("ssb_two"))._tag).toBe("Left")
        })
      )
    })
  })
)

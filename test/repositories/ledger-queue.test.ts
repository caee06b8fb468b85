/**
 * The push queue and the status marks (ledger/Queue.ts), run one by one on a migrated PGlite over
 * generated ledgers and compared with a model of what each must do: the queue pages through the
 * sendable batches in (window, id) order after its cursor; each mark touches exactly the named
 * batches its guard admits (never a synced one, except `sending`), keeps the first attempt's time,
 * counts failures; re-evaluation, re-queues and the synced totals select what their filters say.
 */
import { PgClient } from "@effect/sql-pg"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Option } from "effect"
import fc from "fast-check"
import * as Database from "../../src/db/Database.js"
import type { BatchKey, BatchRow, SkipReason } from "../../src/repositories/ledger/Model.js"
import { quantity, runs } from "../support/arbitraries.js"
import { freshDataDir } from "../support/app.js"
import * as O from "../support/oracle.js"
import {
  asRow,
  byId,
  byWindowThenId,
  CUSTOMERS,
  ERROR_CODES,
  exampleLedger,
  freshScope,
  ledgerArb,
  makeHarness,
  METERS,
  NOW,
  PROPERTY_TIMEOUT,
  runnerFor,
  type Seed,
  WINDOWS
} from "./ledgerModel.js"

const optionalWindow = fc.option(fc.constantFrom(...WINDOWS), { nil: undefined })
const keyOf = (b: Seed): BatchKey => ({ id: b.id, windowStart: b.windowStart })
const error = { code: "rate_limited", message: "Too many requests" }
const ALL = Array.from({ length: 12 }, () => true)
const ALTERNATE = Array.from({ length: 12 }, (_, i) => i % 2 === 0)

type Op =
  | { readonly op: "sending" | "pending" | "failed" | "clearFirstSent" }
  | { readonly op: "synced"; readonly note: boolean }
  | { readonly op: "skipped"; readonly reason: SkipReason }
  | { readonly op: "restore"; readonly firstSent: ReadonlyArray<number | null> }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.constantFrom<Op>({ op: "sending" }, { op: "pending" }, { op: "failed" }, { op: "clearFirstSent" }),
  fc.boolean().map((note): Op => ({ op: "synced", note })),
  fc.constantFrom<SkipReason>("no_mapping", "mapping_deleted").map((reason): Op => ({ op: "skipped", reason })),
  fc.array(fc.option(fc.nat(3600), { nil: null }), { minLength: 12, maxLength: 12 }).map((firstSent): Op => ({ op: "restore", firstSent }))
)

/** What a mark must leave in one named batch (the guard and the columns it sets). */
const applyMark = (b: Seed, o: Op, i: number, now: Date): Seed => {
  if (o.op === "sending") return { ...b, syncStatus: "sending", firstSentAt: b.firstSentAt ?? now, updatedAt: now }
  if (o.op === "restore") {
    if (b.syncStatus !== "sending") return b
    const f = o.firstSent[i % o.firstSent.length]!
    return { ...b, syncStatus: "pending", firstSentAt: f === null ? null : new Date(now.getTime() - f * 1000), errorCode: error.code, errorMessage: error.message, updatedAt: now }
  }
  if (b.syncStatus === "synced") return b
  switch (o.op) {
    case "synced":
      return { ...b, syncStatus: "synced", syncedAt: now, updatedAt: now, errorCode: o.note ? "note_code" : null, errorMessage: o.note ? "note message" : null }
    case "pending":
      return { ...b, syncStatus: "pending", errorCode: error.code, errorMessage: error.message, updatedAt: now }
    case "failed":
      return { ...b, syncStatus: "failed", retryCount: b.retryCount + 1, errorCode: error.code, errorMessage: error.message, updatedAt: now }
    case "skipped":
      return { ...b, syncStatus: "skipped", skipReason: o.reason, updatedAt: now }
    case "clearFirstSent":
      return { ...b, syncStatus: "pending", firstSentAt: null, updatedAt: now }
  }
}

describe("ledger queue statements against the model (PGlite)", () => {
  layer(Database.layerFrom({ url: Option.none(), dataDir: freshDataDir() }), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    const setup = Effect.all({ run: runnerFor, h: Effect.map(PgClient.PgClient, makeHarness) })

    it.effect("pushQueue pages through the sendable batches in (window, id) order after its cursor", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.record({ limit: fc.integer({ min: 1, max: 4 }), retryCap: fc.nat(4), windowFrom: optionalWindow, windowTo: optionalWindow }),
              (ledger, q) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    yield* h.seed(s, ledger)
                    const expected = ledger
                      .filter(
                        (b) =>
                          (b.syncStatus === "pending" ||
                            b.syncStatus === "sending" ||
                            (b.syncStatus === "failed" && b.retryCount < q.retryCap && b.errorCode !== "needs_review" && b.stripeErrorEventId === null)) &&
                          (q.windowFrom === undefined || b.windowStart >= q.windowFrom) &&
                          (q.windowTo === undefined || b.windowStart < q.windowTo)
                      )
                      .sort(byWindowThenId)
                      .map(asRow)
                    const pages = []
                    let after = Option.none<{ windowStart: Date; id: string }>()
                    for (;;) {
                      const page = yield* h.repo.pushQueue({ after, limit: q.limit, retryCap: q.retryCap, windowFrom: q.windowFrom, windowTo: q.windowTo })
                      pages.push(page)
                      const last = page[page.length - 1]
                      if (page.length < q.limit || last === undefined || pages.length > ledger.length + 1) break
                      after = Option.some({ windowStart: last.windowStart, id: last.id })
                    }
                    expect(pages.flat()).toEqual(expected)
                    pages.slice(0, -1).forEach((p) => expect(p.length).toBe(q.limit))
                  }),
                  s
                )
              }
            ),
            // first case fixed: 5 sendable batches over 4 windows, 3 a page, a page boundary inside a window (see exampleLedger)
            { ...runs(20), examples: [[exampleLedger(), { limit: 3, retryCap: 2, windowFrom: undefined, windowTo: undefined }]] }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("marks change exactly the named batches their guard admits, and the columns they own", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.array(fc.record({ op: opArb, pick: fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }), order: fc.nat() }), { minLength: 1, maxLength: 3 }),
              (ledger, ops) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    yield* h.seed(s, ledger)
                    let model = ledger
                    for (const [step, o] of ops.entries()) {
                      const now = new Date(NOW.getTime() + step * 1000)
                      // the named batches in an order that does not follow their windows
                      const named = model.filter((_, i) => o.pick[i % o.pick.length])
                      const rotated = named.map((_, i) => named[(i + o.order) % named.length]!)
                      const keys = rotated.map(keyOf)
                      const index = new Map(rotated.map((b, i) => [b.id, i]))
                      const op = o.op
                      switch (op.op) {
                        case "sending":
                          yield* h.repo.markSending(keys, now)
                          break
                        case "synced":
                          yield* h.repo.markSynced(keys, now, op.note ? { code: "note_code", message: "note message" } : undefined)
                          break
                        case "pending":
                          yield* h.repo.markPending(keys, now, error)
                          break
                        case "failed":
                          yield* h.repo.markFailed(keys, now, error)
                          break
                        case "skipped":
                          yield* h.repo.markSkipped(keys, now, op.reason)
                          break
                        case "clearFirstSent":
                          yield* h.repo.clearFirstSent(keys, now)
                          break
                        case "restore":
                          yield* h.repo.restorePending(
                            rotated.map((b, i) => {
                              const f = op.firstSent[i % op.firstSent.length]!
                              return { ...keyOf(b), firstSentAt: f === null ? null : new Date(now.getTime() - f * 1000) }
                            }),
                            now,
                            error
                          )
                      }
                      model = model.map((b) => (index.has(b.id) ? applyMark(b, o.op, index.get(b.id)!, now) : b))
                      expect(yield* h.stored(s)).toEqual([...model].sort(byId))
                    }
                    // nothing named, nothing changed (and no statement built from an empty key list)
                    const later = new Date(NOW.getTime() + 3_600_000)
                    yield* h.repo.markSending([], later)
                    yield* h.repo.markSynced([], later)
                    yield* h.repo.markPending([], later, error)
                    yield* h.repo.markFailed([], later, error)
                    yield* h.repo.markSkipped([], later, "no_mapping")
                    yield* h.repo.clearFirstSent([], later)
                    yield* h.repo.restorePending([], later, error)
                    expect(yield* h.stored(s)).toEqual([...model].sort(byId))
                  }),
                  s
                )
              }
            ),
            // first cases fixed: every mark over batches in every status (see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger(),
                  [
                    { op: { op: "sending" }, pick: ALTERNATE, order: 5 },
                    { op: { op: "restore", firstSent: [null, 60, 0, 3600, null, 5, 7, null, 120, 1, null, 30] }, pick: ALL, order: 3 },
                    { op: { op: "skipped", reason: "mapping_deleted" }, pick: ALTERNATE.map((b, i) => b || i % 3 === 0), order: 4 },
                    { op: { op: "synced", note: true }, pick: ALTERNATE.map((b) => !b), order: 1 }
                  ]
                ],
                [
                  exampleLedger(),
                  [
                    { op: { op: "failed" }, pick: ALTERNATE, order: 2 },
                    { op: { op: "pending" }, pick: ALTERNATE.map((b) => !b), order: 6 },
                    { op: { op: "clearFirstSent" }, pick: ALL, order: 7 }
                  ]
                ],
                // a skip named on every batch, the synced ones included (the examples above skip none of them)
                [exampleLedger(), [{ op: { op: "skipped", reason: "no_mapping" }, pick: ALL, order: 9 }]]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("re-evaluation lists skipped batches by id after its cursor; makeSendable fixes only skipped ones", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.constantFrom(...WINDOWS),
              fc.integer({ min: 1, max: 3 }),
              fc.array(
                fc.record({ pick: fc.boolean(), sent: quantity(), status: fc.constantFrom("pending" as const, "skipped" as const), provider: fc.constantFrom("mtr_s1", "mtr_s2") }),
                { minLength: 12, maxLength: 12 }
              ),
              (ledger, since, limit, changes) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    yield* h.seed(s, ledger)
                    const expected = ledger
                      .filter((b) => b.syncStatus === "skipped" && (b.skipReason === "no_mapping" || b.skipReason === "mapping_deleted") && b.windowStart >= since)
                      .sort(byId)
                      .map(asRow)
                    const got = []
                    let afterId: string | undefined = undefined
                    for (let n = 0; n <= ledger.length; n++) {
                      const page: ReadonlyArray<BatchRow> = yield* h.repo.skippedForReevaluation({ since, limit, afterId })
                      expect(page.length).toBeLessThanOrEqual(limit)
                      got.push(...page)
                      if (page.length < limit) break
                      afterId = page[page.length - 1]!.id
                    }
                    expect(got).toEqual(expected)

                    const rows = ledger.flatMap((b, i) => {
                      const c = changes[i]!
                      return c.pick
                        ? [{ id: b.id, sentQuantity: c.sent, providerMeterId: c.provider, status: c.status, skipReason: c.status === "skipped" ? ("too_late" as const) : null }]
                        : []
                    })
                    yield* h.repo.makeSendable(rows, NOW)
                    yield* h.repo.makeSendable([], new Date(NOW.getTime() + 1000))
                    const byRow = new Map(rows.map((r) => [r.id, r]))
                    expect(yield* h.stored(s)).toEqual(
                      ledger
                        .map((b): Seed => {
                          const r = byRow.get(b.id)
                          return r === undefined || b.syncStatus !== "skipped"
                            ? b
                            : { ...b, syncStatus: r.status, skipReason: r.skipReason, sentQuantity: O.format(r.sentQuantity), providerMeterId: r.providerMeterId, updatedAt: NOW }
                        })
                        .sort(byId)
                    )
                  }),
                  s
                )
              }
            ),
            // first case fixed: two skipped batches to re-evaluate, one a page; sendable and still-skipped changes (see exampleLedger)
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger(),
                  WINDOWS[0]!,
                  1,
                  exampleLedger().map((b, i) => ({
                    pick: b.syncStatus === "skipped" || i === 0,
                    sent: `${i}.5`,
                    status: i % 2 === 0 ? ("pending" as const) : ("skipped" as const),
                    provider: i % 2 === 0 ? ("mtr_s1" as const) : ("mtr_s2" as const)
                  }))
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )

    it.effect("syncedTotalsFor reads one pair's batches with a send amount in [from, to); requeueFailed re-queues what its filter names", () =>
      Effect.gen(function* () {
        const { run, h } = yield* setup
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              ledgerArb(),
              fc.record({ customer: fc.constantFrom(...CUSTOMERS), meter: fc.constantFrom(...METERS), from: fc.constantFrom(...WINDOWS), to: fc.constantFrom(...WINDOWS) }),
              fc.record({
                needsReview: fc.boolean(),
                customerId: fc.option(fc.constantFrom(...CUSTOMERS), { nil: undefined }),
                meterId: fc.option(fc.constantFrom(...METERS), { nil: undefined }),
                errorCode: fc.option(fc.constantFrom(...ERROR_CODES.filter((c) => c !== null)), { nil: undefined }),
                from: optionalWindow,
                to: optionalWindow,
                dryRun: fc.boolean()
              }),
              (ledger, t, f) => {
                const s = freshScope()
                return run(
                  Effect.gen(function* () {
                    yield* h.seed(s, ledger)
                    const totals = yield* h.repo.syncedTotalsFor(t.customer, t.meter, t.from, t.to)
                    expect([...totals].sort(byId)).toEqual(
                      ledger
                        .filter((b) => b.customerId === t.customer && b.meterId === t.meter && b.windowStart >= t.from && b.windowStart < t.to && b.sentQuantity !== null)
                        .sort(byId)
                        .map(asRow)
                    )

                    const named = ledger.filter(
                      (b) =>
                        b.syncStatus === "failed" &&
                        (f.needsReview ? b.errorCode === "needs_review" : b.errorCode !== "needs_review") &&
                        (f.customerId === undefined || b.customerId === f.customerId) &&
                        (f.meterId === undefined || b.meterId === f.meterId) &&
                        (f.errorCode === undefined || b.errorCode === f.errorCode) &&
                        (f.from === undefined || b.windowStart >= f.from) &&
                        (f.to === undefined || b.windowStart < f.to)
                    )
                    const ids = yield* h.repo.requeueFailed(f, NOW)
                    expect([...ids].sort()).toEqual(named.map((b) => b.id).sort())
                    const requeued = new Set(f.dryRun ? [] : ids)
                    expect(yield* h.stored(s)).toEqual(
                      ledger.map((b): Seed => (requeued.has(b.id) ? { ...b, syncStatus: "pending", retryCount: 0, updatedAt: NOW } : b)).sort(byId)
                    )
                  }),
                  s
                )
              }
            ),
            // first cases fixed (see exampleLedger): a pair with two synced totals and every failed
            // batch re-queued; then every filter at once, in a dry run, over failed batches that
            // each filter alone would let through
            {
              ...runs(20),
              examples: [
                [
                  exampleLedger(),
                  { customer: "cus_a", meter: "mtr_a", from: WINDOWS[0]!, to: WINDOWS[5]! },
                  { needsReview: false, customerId: undefined, meterId: undefined, errorCode: undefined, from: undefined, to: undefined, dryRun: false }
                ],
                [
                  exampleLedger([
                    { idKey: 0x600001, customer: 0, meter: 2, window: 4, sequence: 2, status: "failed", errorCode: "rate_limited" },
                    { idKey: 0x600002, customer: 1, meter: 0, window: 2, sequence: 2, status: "failed", errorCode: "rate_limited" },
                    { idKey: 0x600003, customer: 1, meter: 2, window: 2, sequence: 2, status: "failed", errorCode: "resource_missing" },
                    { idKey: 0x600004, customer: 1, meter: 2, window: 0, sequence: 2, status: "failed", errorCode: "rate_limited" },
                    { idKey: 0x600005, customer: 1, meter: 2, window: 5, sequence: 2, status: "failed", errorCode: "rate_limited" }
                  ]),
                  { customer: "cus_b", meter: "mtr_c", from: WINDOWS[1]!, to: WINDOWS[5]! },
                  { needsReview: false, customerId: "cus_b", meterId: "mtr_c", errorCode: "rate_limited", from: WINDOWS[1]!, to: WINDOWS[5]!, dryRun: true }
                ]
              ]
            }
          )
        )
      }),
      PROPERTY_TIMEOUT
    )
  })
})

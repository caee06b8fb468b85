/**
 * The push (exactly-once rule 2 in SyncPipeline.ts): pending batches leave the ledger in keyset
 * pages; a page is marked `sending` (first_sent_at starts Stripe's 24 h dedup clock) before any
 * of it is sent, then sent in chunks of 100 (one stream request, or one v1 call per batch), and
 * each outcome is recorded: accepted → `synced` (written in groups), transient failure → back to
 * `pending` (a 5xx or a lost connection stops only that batch; an open breaker or a rate limit
 * stops the run pushing), Stripe refused the key → back to `pending` uncharged and the tenant's
 * push paused until its configuration changes, too late → `skipped` (checked again at send),
 * anything else → `failed` (a stream request refused as a whole is first split until the refused
 * batch is alone).
 *
 * Pages are read one ahead: while one page is on the wire the next is read and marked `sending`.
 *
 * Writes per batch, and why each is needed for exactly once. A batch costs the ledger three row
 * writes: the insert (`pending`, with the window's watermark: rule 1), `sending` and `synced`.
 * Each status mark is one statement per page (2,000 batches), joined by primary key and carrying
 * the partition key (SyncBatchRepo's marks), never one per batch or per chunk.
 * - `sending` must be durable before the first request of its page: it records first_sent_at,
 *   the start of Stripe's 24 h identifier dedup. A batch found `pending` with no first_sent_at
 *   was never handed to Stripe and may be sent blindly at any later time; one with a
 *   first_sent_at older than the resend horizon may have been counted and is only resent after
 *   Stripe's summaries say it was not (rule 3, ResendGuard.ts). Without the mark, a process that
 *   died after a send and stayed down past 24 h would resend a counted batch that Stripe no
 *   longer dedups. A page that is never attempted (a stop) goes back to `pending` with the
 *   first_sent_at it had (restoreUnattempted), one statement.
 * - `synced` may lag the send: accepted batches are written `synced` once per page (and before
 *   a stop or failure ends the page). A crash in between leaves them `sending` with first_sent_at
 *   set; the next run resends them under the same identifiers, which Stripe dedups within 24 h,
 *   and past that the resend guard decides from Stripe's summaries. So the mark can be deferred
 *   and grouped (fewer statements, not fewer rows), never skipped: the ledger's `synced` rows are
 *   what reconciliation, the carry and the status counts read.
 * - Failures (`pending` again, `failed`, `skipped`) are written at once, per chunk: they are rare,
 *   and a stop must find the ledger saying why.
 * What the rows still cost is index maintenance. The `sending` mark changes no indexed value
 * (migrations/0015: the partial indexes name `queue_status`, which folds `sending` into
 * `pending`), so it is a HOT update with no new index entry; `synced` takes the batch out of the
 * open index and so writes a new entry into each of the others (BENCHMARKS.md, "Sync").
 */
import type { SqlError } from "@effect/sql"
import { Array as Arr, Chunk, Clock, Context, Effect, Exit, Fiber, Option, Ref, Stream } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import type { MeterMapping } from "../repositories/MeterMappingRepo.js"
import type { BatchRow } from "../repositories/SyncBatchRepo.js"
import type { MeterEvent } from "../stripe/StripeClient.js"
import type { PushContext, PushCounters, RunContext } from "./RunContext.js"
import { onFailure } from "./PushFailures.js"
import { needsVerification, verifyOld } from "./ResendGuard.js"
import { chunkDuration, countBatches, syncLag } from "./SyncMetrics.js"
import * as W from "./Windows.js"

/** Batches per Stripe stream request (and per chunk of v1 calls). */
const CHUNK = 100
/**
 * Accepted batches are written `synced` at the end of their page, or once this many are waiting
 * (a page larger than the default 2,000).
 */
const SYNCED_FLUSH = 5000

/**
 * A pause point right before a chunk is checked and sent (tests: a page prepared inside Stripe's
 * 35-day horizon and sent after it). Unset in production.
 */
export class PushHook extends Context.Tag("flexprice/PushHook")<
  PushHook,
  { readonly beforeChunk: (batches: ReadonlyArray<BatchRow>) => Effect.Effect<void> }
>() {}

interface Sendable {
  readonly batch: BatchRow
  readonly event: MeterEvent
  readonly customerKey: string
}

type Cursor = { readonly windowStart: Date; readonly id: string }

interface PreparedPage {
  /** keyset position after this page */
  readonly cursor: Cursor
  /** already `sending` in the ledger */
  readonly sendable: ReadonlyArray<Sendable>
}

const eventOf = (b: BatchRow, mapping: MeterMapping, stripeCustomer: string): MeterEvent => ({
  eventName: mapping.stripeEventName,
  identifier: b.identifier,
  timestamp: b.windowStart,
  payload: { [mapping.customerPayloadKey]: stripeCustomer, [mapping.valuePayloadKey]: b.sentQuantity ?? "0" }
})

/**
 * Batches Stripe accepted, written `synced` in groups (one UPDATE per page rather than per
 * chunk). A crash before a flush leaves them `sending`: the next run resends them with the
 * same identifiers and Stripe deduplicates (see the header).
 */
interface SyncedBuffer {
  readonly items: Array<BatchRow>
}

const flushSynced = (push: PushContext, buffer: SyncedBuffer) =>
  Effect.suspend(() => {
    const items = buffer.items.splice(0, buffer.items.length)
    if (items.length === 0) return Effect.void
    return Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      yield* push.run.deps.repo.markSynced(items, new Date(now))
      yield* countBatches("synced", items.length)
      yield* syncLag(items, now)
      yield* Ref.update(push.counters, (c) => ({ ...c, synced: c.synced + items.length }))
    })
  })

/** What one page's chunks share while they are sent. */
interface PageSend {
  /** batches handed to Stripe (the rest of a stopped page goes back to `pending`) */
  readonly attempted: Set<string>
  readonly buffer: SyncedBuffer
}

/**
 * One stream request for `part`. Stripe refuses a stream request as a whole when it holds an
 * invalid event (a 400 names no event: https://docs.stripe.com/api/v2/billing/meter-event-stream/create
 * validates the request before accepting any of it), so a refusal says nothing about which
 * batch is bad: the part is split in halves and each is sent again (nothing of a refused request
 * was recorded, and the identifiers make any resend safe), until the refused batches are alone
 * and only they are charged an attempt. A part of n batches costs at most 2n − 1 requests, and
 * only when Stripe refuses it; the halves not sent after a stop go back to `pending` unattempted.
 */
const sendStream = (push: PushContext, part: ReadonlyArray<Sendable>, page: PageSend): Effect.Effect<void, SqlError.SqlError, CurrentTenant> =>
  Effect.gen(function* () {
    const { counters, ref } = push
    if ((yield* Ref.get(counters)).stop !== null) return
    for (const c of part) page.attempted.add(c.batch.id)
    const result = yield* Effect.either(
      push.run.deps.stripe.sendMeterEventsStream(
        ref,
        part.map((c) => c.event)
      )
    )
    yield* Ref.update(counters, (c) => ({ ...c, requests: c.requests + 1 }))
    if (result._tag === "Right") {
      page.buffer.items.push(...part.map((c) => c.batch))
      return
    }
    if (result.left._tag === "StripeInvalidRequest" && part.length > 1) {
      const half = Math.ceil(part.length / 2)
      for (const c of part) page.attempted.delete(c.batch.id)
      yield* sendStream(push, part.slice(0, half), page)
      yield* sendStream(push, part.slice(half), page)
      return
    }
    yield* onFailure(
      push,
      part.map((c) => c.batch),
      result.left
    )
  })

/**
 * Stripe's 35-day horizon, checked by the clock at send: a page is prepared (and checked) before
 * the page ahead of it is sent, and a send can wait behind back-off and retries, so a batch
 * inside the horizon when prepared can be past it when it goes. Such batches are skipped
 * `too_late` (as at prepare) instead of sent: v1 would refuse them, and the stream would accept
 * them and drop them later, leaving a batch marked synced that Stripe never counted. Returns
 * the rest, to send now.
 */
const withinHorizonAtSend = (push: PushContext, sendables: ReadonlyArray<Sendable>, page: PageSend) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const [ready, late] = Arr.partition(sendables, (c) => !W.withinSendHorizon(c.batch.windowStart, now))
    if (late.length === 0) return ready
    for (const c of late) page.attempted.add(c.batch.id)
    yield* push.run.deps.repo.markSkipped(
      late.map((c) => c.batch),
      new Date(now),
      "too_late"
    )
    yield* countBatches("skipped", late.length)
    yield* Ref.update(push.counters, (c) => ({ ...c, skipped: c.skipped + late.length }))
    return ready
  })

const beforeChunk = (chunk: ReadonlyArray<Sendable>) =>
  Effect.flatMap(Effect.serviceOption(PushHook), (h) =>
    Option.isSome(h) ? h.value.beforeChunk(chunk.map((c) => c.batch)) : Effect.void
  )

/** One chunk to Stripe (the page is already `sending`); failures are recorded at once. */
const pushChunk = Effect.fn("Push.pushChunk")(function* (push: PushContext, whole: ReadonlyArray<Sendable>, page: PageSend) {
  yield* Effect.annotateCurrentSpan({ "sync.batches": whole.length, "sync.transport": push.run.config.transport })
  const { config, deps } = push.run
  const { counters, ref } = push
  const { attempted, buffer } = page
  if ((yield* Ref.get(counters)).stop !== null) return
  yield* beforeChunk(whole)
  const started = yield* Clock.currentTimeMillis
  if (config.transport === "stream") {
    const chunk = yield* withinHorizonAtSend(push, whole, page)
    if (chunk.length === 0) return
    yield* sendStream(push, chunk, page)
  } else {
    yield* Effect.forEach(
      whole,
      (c) =>
        Effect.flatMap(Ref.get(counters), (state) =>
          state.stop !== null
            ? Effect.void
            : Effect.flatMap(withinHorizonAtSend(push, [c], page), (ready) => {
                if (ready.length === 0) return Effect.void
                attempted.add(c.batch.id)
                return deps.stripe.sendMeterEventV1(ref, c.event, { customerPayloadKey: c.customerKey }).pipe(
                  Effect.either,
                  Effect.tap(() => Ref.update(counters, (s) => ({ ...s, requests: s.requests + 1 }))),
                  Effect.flatMap((r) =>
                    r._tag === "Right" ? Effect.sync(() => void buffer.items.push(c.batch)) : onFailure(push, [c.batch], r.left)
                  )
                )
              })
        ),
      { concurrency: deps.settings.pushConcurrency, discard: true }
    )
  }
  if (buffer.items.length >= SYNCED_FLUSH) yield* flushSynced(push, buffer)
  yield* chunkDuration((yield* Clock.currentTimeMillis) - started)
})

/**
 * Reads the next page of the queue, skips what cannot be sent and marks the rest `sending`
 * (first_sent_at starts the 24 h clock) — all before any of it goes to Stripe. None: the
 * queue is exhausted.
 */
const preparePage = (push: PushContext, after: Option.Option<Cursor>) =>
  Effect.gen(function* () {
    const { mappingByMeter, range } = push.run
    const { repo, settings } = push.run.deps
    const page = yield* repo.pushQueue({
      after,
      limit: settings.pushPageSize,
      retryCap: settings.maxRetries,
      windowFrom: range?.from,
      windowTo: range?.to
    })
    if (page.length === 0) return Option.none<PreparedPage>()
    const last = page[page.length - 1]!
    const now = yield* Clock.currentTimeMillis
    const stripeCustomers = yield* push.run.customers.activeByCustomerIds([...new Set(page.map((b) => b.customerId))])
    const noMeter: Array<BatchRow> = []
    const noCustomer: Array<BatchRow> = []
    const tooLate: Array<BatchRow> = []
    const preAggregated: Array<BatchRow> = []
    const sendable: Array<Sendable> = []
    for (const b of page) {
      const mapping = mappingByMeter.get(b.meterId)
      const customer = stripeCustomers.get(b.customerId)
      if (mapping === undefined) {
        noMeter.push(b)
        continue
      }
      if (push.run.supported.preAggregated.has(b.meterId)) {
        preAggregated.push(b)
        continue
      }
      // its Stripe meter could not be read this run: stays pending for a later run
      if (push.run.supported.held(b.meterId)) continue
      if (customer === undefined) {
        noCustomer.push(b)
        continue
      }
      if (needsVerification(push, b, now)) {
        const resend = yield* verifyOld(push, { batch: b, mapping, stripeCustomer: customer })
        if (!resend) continue
      } else if (!W.withinSendHorizon(b.windowStart, now)) {
        tooLate.push(b)
        continue
      }
      sendable.push({ batch: b, event: eventOf(b, mapping, customer), customerKey: mapping.customerPayloadKey })
    }
    const at = new Date(now)
    yield* repo.markSkipped(noMeter, at, "mapping_deleted")
    yield* repo.markSkipped(noCustomer, at, "no_mapping")
    yield* repo.markSkipped(tooLate, at, "too_late")
    yield* repo.markSkipped(preAggregated, at, "pre_aggregated_meter")
    const skippedNow = noMeter.length + noCustomer.length + tooLate.length + preAggregated.length
    yield* countBatches("skipped", skippedNow)
    yield* Ref.update(push.counters, (c) => ({ ...c, skipped: c.skipped + skippedNow }))
    yield* repo.markSending(
      sendable.map((x) => x.batch),
      at
    )
    return Option.some<PreparedPage>({ cursor: { windowStart: last.windowStart, id: last.id }, sendable })
  })

/** Batches marked `sending` but never attempted (a stop) go back to `pending`. */
const restoreUnattempted = (push: PushContext, sendable: ReadonlyArray<Sendable>, attempted: ReadonlySet<string>) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    push.run.deps.repo.restorePending(
      sendable.filter((x) => !attempted.has(x.batch.id)).map((x) => x.batch),
      new Date(now),
      { code: "sync_stopped", message: "not attempted in this run after a transient Stripe failure" }
    )
  )

const isStopped = (push: PushContext) => Effect.map(Ref.get(push.counters), (c) => c.stop !== null)

/**
 * The prepared pages of the queue, in keyset order. A page is read only while the run has not
 * stopped pushing (checked when the previous page is handed on, i.e. after the page before it
 * was sent, as the read-ahead below starts it).
 */
const preparedPages = (push: PushContext) =>
  Stream.paginateChunkEffect(Option.none<Cursor>(), (after) =>
    Effect.flatMap(isStopped(push), (stopped) =>
      Option.isSome(after) && stopped
        ? Effect.succeed([Chunk.empty<PreparedPage>(), Option.none<Option.Option<Cursor>>()] as const)
        : Effect.map(preparePage(push, after), (page) =>
            Option.match(page, {
              onNone: () => [Chunk.empty<PreparedPage>(), Option.none<Option.Option<Cursor>>()] as const,
              onSome: (p) => [Chunk.of(p), Option.some(Option.some(p.cursor))] as const
            })
          )
    )
  )

/** The `synced` write of the last page sent, still running while the next page goes out. */
interface Flushes {
  last: Fiber.RuntimeFiber<void> | undefined
}

/**
 * A page's `synced` write runs behind the next page's requests (one write in flight, in page
 * order): the marks may lag the send (header), so the next page need not wait for them. A page
 * that ended by failure or interruption writes them before it returns, as before.
 */
const flushBehind = (push: PushContext, flushes: Flushes, buffer: SyncedBuffer) =>
  Effect.gen(function* () {
    if (flushes.last !== undefined) yield* Fiber.await(flushes.last)
    flushes.last = yield* Effect.fork(Effect.ignore(flushSynced(push, buffer)))
  })

/** Sends one prepared page; a stopped run hands the page back to `pending` unattempted. */
const sendPage = (push: PushContext, flushes: Flushes, { sendable }: PreparedPage) =>
  Effect.gen(function* () {
    if (yield* isStopped(push)) return yield* restoreUnattempted(push, sendable, new Set())
    const page: PageSend = { attempted: new Set<string>(), buffer: { items: [] } }
    yield* Effect.forEach(Arr.chunksOf(sendable, CHUNK), (chunk) => pushChunk(push, chunk, page), {
      concurrency: push.run.config.transport === "stream" ? push.run.deps.settings.pushConcurrency : 1,
      discard: true
    }).pipe(
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) ? flushBehind(push, flushes, page.buffer) : Effect.ignore(flushSynced(push, page.buffer))
      )
    )
    yield* restoreUnattempted(push, sendable, page.attempted)
  })

export const push = Effect.fn("Push.push")(function* (run: RunContext, counters: Ref.Ref<PushCounters>) {
  yield* Effect.annotateCurrentSpan({ "sync.transport": run.config.transport })
  const ref = yield* run.account
  const ctx: PushContext = { run, ref, counters }
  const flushes: Flushes = { last: undefined }
  // Pipelined: while one page is on the wire, the next one is read and marked `sending`
  // (its own keyset range, so no row is in two pages). A zero-capacity buffer is a
  // rendezvous (effect's bounded Queue with BackPressureStrategy hands an offer straight to a
  // waiting taker, internal/queue.ts `onCompleteTakersWithEmptyQueue`): the reader starts the
  // next page when the previous one is taken, so exactly one page is read ahead; capacity 1
  // would hold one page in the queue and prepare a second. If the run stops, the prepared page
  // goes back to `pending` unattempted; if the run fails or is interrupted, the prepared page
  // is left `sending`, like after a crash (resent with the same identifiers).
  yield* preparedPages(ctx).pipe(
    Stream.buffer({ capacity: 0 }),
    Stream.runForEach((page) => sendPage(ctx, flushes, page)),
    Effect.ensuring(Effect.suspend(() => (flushes.last === undefined ? Effect.void : Fiber.await(flushes.last))))
  )
})

/**
 * How the push records a Stripe failure for the batches of one request (Push.ts): the outcome
 * is written at once, per chunk, and the run's tallies and stop flag updated. Which outcome a
 * Stripe error means is StripeErrorClass.ts's call.
 */
import { Clock, Effect, Option, Ref } from "effect"
import { CurrentTenant } from "../domain/Tenant.js"
import type { BatchRow } from "../repositories/SyncBatchRepo.js"
import { errorInfo, isTooLate, isTransient, stopsThePush } from "../stripe/StripeErrorClass.js"
import type { StripeError } from "../stripe/StripeErrors.js"
import type { PushContext } from "./RunContext.js"
import { countBatches, syncErrors } from "./SyncMetrics.js"

/** An error report (Sentry when configured) naming the first batch of those it concerns. */
const report = (push: PushContext, batches: ReadonlyArray<BatchRow>, e: StripeError, info: { readonly code: string }) =>
  Effect.gen(function* () {
    const first = batches[0]
    const scope = Option.getOrUndefined(yield* Effect.serviceOption(CurrentTenant))
    yield* push.run.deps.reporter.report(e, {
      area: "sync",
      code: info.code,
      tenantId: scope?.tenantId,
      environmentId: scope?.environmentId,
      window: first ? `${first.windowStart.toISOString()}/${first.windowEnd.toISOString()}` : undefined,
      batchId: first?.id,
      stripeRequestId: "requestId" in e ? e.requestId : undefined,
      extra: { batches: batches.length }
    })
  })

export const onFailure = (push: PushContext, batches: ReadonlyArray<BatchRow>, e: StripeError) =>
  Effect.gen(function* () {
    const { repo } = push.run.deps
    const { counters } = push
    const now = new Date(yield* Clock.currentTimeMillis)
    const ids = batches.map((b) => b.id)
    const info = errorInfo(e)
    yield* syncErrors(info.code)
    if (e._tag === "StripeAuthenticationFailed") {
      // A refused key (401 — e.g. a rolled key's `api_key_expired`, https://docs.stripe.com/keys#rolling-keys
      // — or 403) is the tenant's configuration, not these batches: they wait uncharged, and the
      // tenant's push pauses until the configuration changes (StripeConfigRepo.pauseSync), so
      // a key roll can never run batches into the retry cap.
      yield* repo.markPending(batches, now, info)
      yield* countBatches("retrying", ids.length)
      const paused = yield* push.run.deps.configs.pauseSync({ ...info, since: now }, push.run.config.updatedAt)
      if (paused) yield* report(push, batches, e, info)
      yield* Ref.update(counters, (c) => ({ ...c, stop: c.stop ?? info.code }))
    } else if (isTransient(e)) {
      // An outage, a rate-limit storm or an open breaker never fails a batch: it stays
      // pending (the identifier makes the resend safe). A 5xx or a lost connection that outlived
      // the client's retries stops only this batch: one batch Stripe keeps failing must not
      // hold back the tenant's queue. Whether Stripe itself is down is the circuit breaker's
      // call — it counts these failures, and once open every further call fails fast as
      // `StripeCircuitOpen`, which stops the run, as an exhausted rate limit does.
      yield* repo.markPending(batches, now, info)
      yield* countBatches("retrying", ids.length)
      yield* Ref.update(counters, (c) =>
        stopsThePush(e) ? { ...c, stop: c.stop ?? info.code } : { ...c, deferred: c.deferred ?? info.code }
      )
    } else if (isTooLate(e)) {
      yield* repo.markSkipped(batches, now, "too_late")
      yield* countBatches("skipped", ids.length)
      yield* Ref.update(counters, (c) => ({ ...c, skipped: c.skipped + ids.length }))
    } else {
      yield* repo.markFailed(batches, now, info)
      yield* countBatches("failed", ids.length)
      yield* report(push, batches, e, info)
      yield* Ref.update(counters, (c) => ({ ...c, failed: c.failed + ids.length }))
    }
  })

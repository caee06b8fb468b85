/**
 * Stripe's v2 event destination for one tenant environment: thin events, signed like webhooks
 * with the destination's own secret (https://docs.stripe.com/event-destinations#thin-payload).
 *
 * Why: the v2 meter event stream answers 200 and validates asynchronously; an event it drops (a
 * deleted customer, an archived meter, ...) is reported later as `v1.billing.meter.error_report_triggered`
 * (or `v1.billing.meter.no_meter_found`) with Stripe's error code and sample identifiers
 * (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#error-handling).
 * Without this the ledger says `synced` for usage Stripe never counted.
 *
 * A delivery is verified with the `stripe` SDK's signature helper on the raw body (the one
 * `stripe.parseEventNotification` calls; that method needs an API client, which a webhook does
 * not have yet), deduplicated by event id (`webhook_events`), and the full event is fetched with
 * the tenant's key (`GET /v2/core/events/:id`, the SDK's `v2.core.events.retrieve`) — a thin
 * event carries no data, and only the tenant's own account can return it. An event for a
 * connected account (`context`) must name the account the tenant is connected to.
 *
 * Each sampled identifier's batch, if it is `synced` and was sent no later than the report's
 * validation window (plus a margin for clocks), becomes `failed` with Stripe's code and is held
 * (BatchRepairRepo) until a mapping fix re-queues it (src/sync/Repairs.ts). Stripe samples the
 * errors it reports; batches beyond the sample are found by scheduled reconciliation.
 */
import { Cause, Clock, Data, Effect, Either, Metric, Option, Redacted, Schema } from "effect"
import { TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"
import * as Metrics from "../observability/Metrics.js"
import { BatchRepairRepo } from "../repositories/BatchRepairRepo.js"
import { StripeConfigRepo } from "../repositories/StripeConfigRepo.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { WebhookEventRepo } from "../repositories/WebhookEventRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import { isStripeError } from "../stripe/StripeErrors.js"
import { codeLabel } from "../stripe/MeterErrorCodes.js"
import { admit, measured, type RawDelivery, reject, verifySignature, WebhookProcessingFailed } from "./Intake.js"
import { WebhookConfig } from "./WebhookConfig.js"

export const ERROR_REPORT_TYPES = new Set(["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"])

/** How long a report waits for a batch it names to leave `sending`, before answering 500 (redelivered). */
const SENDING_WAIT_MS = 10_000

/** Our send is marked synced a moment after Stripe accepted it; clocks differ a little. */
const SENT_MARGIN_MS = 5 * 60_000

const Notification = Schema.Struct({
  id: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  object: Schema.optional(Schema.String),
  type: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255)),
  created: Schema.optional(Schema.String),
  livemode: Schema.optional(Schema.Boolean),
  context: Schema.optional(Schema.NullOr(Schema.String))
})

const ErrorReport = Schema.Struct({
  reason: Schema.Struct({
    error_count: Schema.optional(Schema.Number),
    error_types: Schema.Array(
      Schema.Struct({
        code: Schema.String,
        error_count: Schema.optional(Schema.Number),
        sample_errors: Schema.optionalWith(
          Schema.Array(
            Schema.Struct({
              error_message: Schema.optional(Schema.String),
              request: Schema.optional(Schema.Struct({ identifier: Schema.optional(Schema.String) }))
            })
          ),
          { default: () => [] }
        )
      })
    )
  }),
  validation_start: Schema.optional(Schema.String),
  validation_end: Schema.optional(Schema.String)
})

export interface DestinationDelivery extends RawDelivery {
  readonly route: { readonly tenantId: string; readonly environmentId: string }
}

class ReportUnreadable extends Data.TaggedError("ReportUnreadable")<{ readonly message: string }> {}

export class EventDestination extends Effect.Service<EventDestination>()("flexprice/EventDestination", {
  effect: Effect.gen(function* () {
    const settings = yield* WebhookConfig
    const events = yield* WebhookEventRepo
    const accounts = yield* StripeAccounts
    const configs = yield* StripeConfigRepo
    const tenants = yield* TenantRepo
    const repairs = yield* BatchRepairRepo
    const stripe = yield* StripeClient
    const reporter = yield* ErrorReporter

    const verify = (body: Uint8Array, header: string | undefined, secret: Redacted.Redacted<string>) =>
      Effect.gen(function* () {
        const parsed = yield* verifySignature({ settings, body, header, secret })
        const n = yield* Schema.decodeUnknown(Notification)(parsed).pipe(
          Effect.mapError(() => reject(400, "invalid_event", "the body is not a Stripe thin event (id, type)", "malformed"))
        )
        if (n.object !== undefined && n.object !== "v2.core.event")
          return yield* reject(400, "invalid_event", "not a v2 event notification (object must be v2.core.event); v1 events go to /webhooks/stripe", "malformed")
        return n
      })

    /** Marks the reported batches; answers what it did (recorded on the webhook_events row). */
    const applyReport = (eventId: string, context: string | null) =>
      Effect.gen(function* () {
        const ref = yield* accounts.refFor
        const full = yield* stripe.retrieveV2Event(ref, eventId, context)
        const report = yield* Schema.decodeUnknown(ErrorReport)(full.data).pipe(
          Effect.mapError(() => new ReportUnreadable({ message: "the event's data has no reason.error_types" }))
        )
        const now = yield* Clock.currentTimeMillis
        const end = report.validation_end !== undefined ? Date.parse(report.validation_end) : Number.NaN
        // Without a validation window, the event's creation bounds the sends it can be about.
        const created = Date.parse((full as { created?: string }).created ?? "")
        const boundary = Number.isFinite(end) ? end : Number.isFinite(created) ? created : now
        const perCode: Array<Record<string, unknown>> = []
        for (const t of report.reason.error_types) {
          const identifiers = [
            ...new Set(t.sample_errors.flatMap((s) => (s.request?.identifier ? [s.request.identifier] : [])))
          ]
          // A report can overtake our own bookkeeping of the send it is about (the batch is still
          // `sending` until Stripe's 200 is recorded): wait for that, briefly; still sending →
          // 500, and Stripe's redelivery applies the report.
          let known = yield* repairs.byIdentifiers(identifiers)
          for (let waited = 0; waited < SENDING_WAIT_MS && known.some((r) => r.syncStatus === "sending"); waited += 200) {
            yield* Effect.sleep("200 millis")
            known = yield* repairs.byIdentifiers(identifiers)
          }
          if (known.some((r) => r.syncStatus === "sending"))
            return yield* new ReportUnreadable({ message: "a reported batch is still being sent; the redelivery applies the report" })
          const marked = yield* repairs.markDropped({
            identifiers,
            code: t.code,
            message: `Stripe dropped this meter event after accepting it (${full.type} ${eventId}): ${t.sample_errors[0]?.error_message ?? t.code}`,
            eventId,
            sentBefore: new Date(boundary + SENT_MARGIN_MS),
            at: new Date(now)
          })
          const errors = t.error_count ?? t.sample_errors.length
          yield* Metric.incrementBy(Metric.tagged(Metrics.stripeMeterErrorReportsTotal, "code", codeLabel(t.code)), errors)
          if (marked.length > 0) yield* Metric.incrementBy(Metric.tagged(Metrics.syncBatchesTotal, "status", "failed"), marked.length)
          perCode.push({
            code: t.code,
            error_count: errors,
            sampled: identifiers.length,
            batches_failed: marked.length,
            // in the ledger but not synced now (already failed by this report, re-queued, ...): unchanged
            batches_unchanged: known.length - marked.length,
            // not ours (another integration on the account) or pruned
            identifiers_unknown: identifiers.length - known.length,
            // Stripe reports a sample; the rest is found by reconciliation
            unsampled: Math.max(0, errors - identifiers.length)
          })
          yield* Effect.logWarning("Stripe dropped meter events after accepting them").pipe(
            Effect.annotateLogs({ stripe_event_id: eventId, code: t.code, error_count: errors, batches_failed: marked.length })
          )
        }
        return { meter: full.relatedObject?.id ?? null, errors: perCode }
      })

    /** One delivery, end to end. */
    const receive = Effect.fn("EventDestination.receive")(function* (d: DestinationDelivery) {
      let type = "unknown"
      return yield* measured(() => type, Effect.gen(function* () {
        yield* admit(settings, d)
        const scope = Either.getOrUndefined(Schema.decodeUnknownEither(TenantScope)(d.route))
        if (scope === undefined || !(yield* tenants.environmentExists(scope)))
          return yield* reject(400, "tenant_not_found", "no such tenant environment", "tenant")
        const secret = yield* accounts.eventDestinationSecretFor(scope)
        if (Option.isNone(secret))
          return yield* reject(
            400,
            "event_destination_secret_not_configured",
            "this environment has no event destination secret (PUT /v1/stripe/config event_destination_secret)",
            "not_configured"
          )
        const n = yield* verify(d.body, d.signature, secret.value)
        type = n.type
        yield* Effect.annotateCurrentSpan({ "webhook.event_id": n.id, "webhook.type": n.type, "tenant.id": scope.tenantId, "environment.id": scope.environmentId })
        // Cross-tenant rule: an event of a connected account belongs to the tenant connected to it.
        const context = n.context ?? null
        if (context !== null) {
          const stored = yield* configs.getStoredFor(scope)
          const account = Option.match(stored, { onNone: () => null, onSome: (s) => s.stripeAccountId })
          if (account === null || context.split("/").pop() !== account) {
            yield* Effect.logWarning("event destination delivery refused: context is not this tenant's Stripe account", {
              stripe_event_id: n.id,
              context: context.slice(0, 64)
            })
            return yield* reject(400, "tenant_account_mismatch", "the event's context is not the Stripe account this environment is connected to", "tenant")
          }
        }
        const status = yield* process(n, context).pipe(Effect.provideService(CurrentTenant, scope))
        return { eventId: n.id, type: n.type, status, scope }
      }))
    })

    const process = (n: typeof Notification.Type, context: string | null) =>
      Effect.gen(function* () {
        const id = yield* events.claim({
          stripeEventId: n.id,
          type: n.type,
          stripeCreated: n.created !== undefined && Number.isFinite(Date.parse(n.created)) ? new Date(n.created) : null,
          stripeObjectId: null
        })
        if (id === null) return "duplicate" as const
        if (!ERROR_REPORT_TYPES.has(n.type)) {
          yield* events.finish(id, "ignored", { reason: "event_type_not_handled" })
          return "ignored" as const
        }
        return yield* applyReport(n.id, context).pipe(
          Effect.tap((details) => events.finish(id, "processed", details)),
          Effect.as("processed" as const),
          Effect.catchAllCause((cause) =>
            Effect.gen(function* () {
              const failure = Cause.failureOption(cause)
              const e = Option.getOrUndefined(failure)
              const message =
                e !== undefined && isStripeError(e)
                  ? `Stripe could not return the event: ${e._tag}`
                  : e !== undefined && typeof e === "object" && e !== null && "message" in e
                  ? String((e as { message: unknown }).message)
                  : "processing failed"
              yield* Effect.logError("event destination processing failed", { stripe_event_id: n.id, type: n.type, error: message })
              yield* events.markFailed(id, message).pipe(Effect.catchAllCause(() => Effect.void))
              yield* reporter.report(Cause.squash(cause), { area: "webhook", code: "event_destination_failed", extra: { stripe_event_id: n.id, type: n.type } })
              // 500: Stripe redelivers, and the failed row lets the redelivery process it again.
              return yield* new WebhookProcessingFailed({ eventId: n.id, message })
            })
          )
        )
      })

    return { receive, settings } as const
  })
}) {}

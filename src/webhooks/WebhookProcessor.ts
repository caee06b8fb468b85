/**
 * Stripe webhook intake: source address check, size cap, signature verification with the
 * `stripe` SDK on the raw bytes, tenant resolution, dedup on the Stripe event id, and the
 * customer onboarding the events drive (through CustomerLinker, like the migration).
 *
 * Rejections (`WebhookRejected`) answer 4xx and change nothing; processing failures
 * (`WebhookProcessingFailed`) answer 500 so Stripe retries, and leave the row `failed` with the
 * error, which lets the redelivery process it again.
 */
import { Cause, Effect, Either, Option, Redacted, Schema } from "effect"
import { type EnvironmentId, type TenantId, TenantScope } from "../domain/Ids.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { CustomerLinker } from "../customers/CustomerLinker.js"
import { StripeConfigRepo } from "../repositories/StripeConfigRepo.js"
import { TenantRepo } from "../repositories/TenantRepo.js"
import { WebhookEventRepo, type WebhookStatus } from "../repositories/WebhookEventRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { admit, measured, type RawDelivery, reject, verifySignature, WebhookProcessingFailed } from "./Intake.js"
import { WebhookConfig } from "./WebhookConfig.js"
import { textProblem } from "../domain/Text.js"
import { ErrorReporter } from "../observability/ErrorReporter.js"

export { type RejectReason, WebhookProcessingFailed, WebhookRejected } from "./Intake.js"

export interface WebhookDelivery extends RawDelivery {
  /** `null`: the global endpoint (STRIPE_WEBHOOK_SECRET, tenant from the event). */
  readonly route: { readonly tenantId: string; readonly environmentId: string } | null
}

export interface WebhookResult {
  readonly eventId: string
  readonly type: string
  readonly status: Exclude<WebhookStatus, "received" | "failed">
  readonly scope: TenantScope
  readonly details: Record<string, unknown>
}

// Only the fields used are decoded, so newer or older API versions pass.
const EventEnvelope = Schema.Struct({
  id: Schema.String.pipe(Schema.minLength(1)),
  type: Schema.String.pipe(Schema.minLength(1)),
  created: Schema.optional(Schema.Number),
  livemode: Schema.optional(Schema.Boolean),
  account: Schema.optional(Schema.NullOr(Schema.String)),
  data: Schema.Struct({ object: Schema.Unknown })
})
type EventEnvelope = typeof EventEnvelope.Type

const CustomerObject = Schema.Struct({
  id: Schema.String.pipe(Schema.minLength(1)),
  name: Schema.optional(Schema.NullOr(Schema.String)),
  email: Schema.optional(Schema.NullOr(Schema.String)),
  metadata: Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Unknown })))
})

const ObjectWithMetadata = Schema.Struct({
  id: Schema.optional(Schema.String),
  metadata: Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Unknown })))
})

const metaString = (m: Readonly<Record<string, unknown>> | null | undefined, key: string): string | undefined => {
  const v = m?.[key]
  return typeof v === "string" && v.trim() !== "" ? v.trim() : undefined
}

/**
 * A customer the event would create must respect the API's own limits (external_id 1 – 255,
 * name and email at most 500, text the database keeps exactly): otherwise the delivery is
 * refused before it is recorded, rather than failing with 500 and being retried for days.
 */
const customerFieldProblem = (object: unknown): { readonly field: string; readonly problem: string } | null => {
  const c = Either.getOrUndefined(Schema.decodeUnknownEither(CustomerObject)(object))
  if (c === undefined) return null
  const checks: ReadonlyArray<[string, unknown, number]> = [
    ["metadata.external_id", c.metadata?.["external_id"], 255],
    ["name", c.name, 500],
    ["email", c.email, 500]
  ]
  for (const [field, v, max] of checks) {
    if (typeof v !== "string") continue
    const p = textProblem(v)
    if (p !== null) return { field, problem: p }
    if (v.trim().length > max) return { field, problem: `is longer than ${max} characters` }
  }
  for (const k of Object.keys(c.metadata ?? {})) {
    const p = textProblem(k)
    if (p !== null) return { field: "metadata", problem: `key ${p}` }
  }
  return null
}

const causeMessage = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  const e: unknown = Option.isSome(failure) ? failure.value : Cause.squash(cause)
  if (e !== null && typeof e === "object") {
    const o = e as { _tag?: unknown; message?: unknown; cause?: { message?: unknown } }
    const inner = o.cause && typeof o.cause.message === "string" ? `: ${o.cause.message}` : ""
    return `${typeof o._tag === "string" ? `${o._tag}: ` : ""}${typeof o.message === "string" ? o.message : "failure"}${inner}`
  }
  return String(e)
}

export class WebhookProcessor extends Effect.Service<WebhookProcessor>()("flexprice/WebhookProcessor", {
  effect: Effect.gen(function* () {
    const settings = yield* WebhookConfig
    const events = yield* WebhookEventRepo
    const linker = yield* CustomerLinker
    const accounts = yield* StripeAccounts
    const configs = yield* StripeConfigRepo
    const tenants = yield* TenantRepo
    const reporter = yield* ErrorReporter

    const scopeOf = (tenantId: string, environmentId: string) =>
      Either.getOrUndefined(Schema.decodeUnknownEither(TenantScope)({ tenantId, environmentId }))

    const knownScope = (tenantId: string, environmentId: string) =>
      Effect.gen(function* () {
        const scope = scopeOf(tenantId, environmentId)
        if (scope === undefined || !(yield* tenants.environmentExists(scope))) return undefined
        return scope
      })

    const tenantNotFound = (why: string) => reject(400, "tenant_not_found", why, "tenant")

    const verify = (body: Uint8Array, header: string | undefined, secret: Redacted.Redacted<string>) =>
      verifySignature({ settings, body, header, secret }).pipe(
        Effect.flatMap(Schema.decodeUnknown(EventEnvelope)),
        Effect.mapError((e) =>
          e._tag === "WebhookRejected" ? e : reject(400, "invalid_event", "the body is not a Stripe event (id, type, data.object)", "malformed")
        )
      )

    /**
     * Global endpoint: the tenant is the one connected to the Stripe account the event comes from
     * (`event.account`, recorded by `POST /v1/stripe/config/test`). Customer metadata is written
     * by whoever owns that Stripe account, so a tenant it names is only a choice among the
     * environments connected to the account, never a way into another one: a name that does not
     * match is refused (and logged), like an event without an account.
     */
    const resolveTenant = (event: EventEnvelope) =>
      Effect.gen(function* () {
        const obj = Either.getOrUndefined(Schema.decodeUnknownEither(ObjectWithMetadata)(event.data.object))
        const t = metaString(obj?.metadata, "flexprice_tenant_id")
        const e = metaString(obj?.metadata, "flexprice_environment_id")
        const named = t !== undefined || e !== undefined ? { tenantId: t ?? "", environmentId: e ?? "" } : undefined
        if (typeof event.account !== "string" || event.account === "")
          return yield* tenantNotFound(
            "the event names no Stripe account (event.account); the global endpoint serves connected accounts only, use the per-environment endpoint"
          )
        const scopes = yield* configs.scopesByAccountId(event.account)
        const candidates = [] as Array<TenantScope>
        for (const s of scopes) {
          const stored = yield* configs.getStoredFor(s)
          if (Option.isSome(stored) && (event.livemode === undefined || stored.value.livemode === event.livemode)) candidates.push(s)
        }
        if (named !== undefined) {
          const match = candidates.find((c) => c.tenantId === named.tenantId && c.environmentId === named.environmentId)
          if (match !== undefined) return match
          yield* Effect.logWarning("webhook refused: metadata names a tenant not connected to the event's Stripe account", {
            stripe_event_id: event.id,
            stripe_account: event.account,
            named_tenant_id: named.tenantId.slice(0, 64),
            named_environment_id: named.environmentId.slice(0, 64)
          })
          return yield* reject(
            400,
            "tenant_account_mismatch",
            "the tenant environment named in the metadata is not connected to the event's Stripe account",
            "tenant"
          )
        }
        if (candidates.length === 1) return candidates[0]!
        if (candidates.length > 1) return yield* tenantNotFound("several tenant environments are connected to this Stripe account; use the per-environment endpoint")
        return yield* tenantNotFound("no tenant environment is connected to this Stripe account (POST /v1/stripe/config/test records it)")
      })

    interface Handled {
      readonly status: Exclude<WebhookStatus, "received" | "failed" | "duplicate">
      readonly details: Record<string, unknown>
    }

    const processCustomer = (event: EventEnvelope) =>
      Effect.gen(function* () {
        const decoded = Schema.decodeUnknownEither(CustomerObject)(event.data.object)
        if (Either.isLeft(decoded)) return { status: "ignored", details: { reason: "not_a_customer_object" } } as Handled
        const c = decoded.right
        if (event.type === "customer.deleted") {
          const changed = yield* linker.unlinkStripeCustomer(c.id)
          return { status: "processed", details: { stripe_customer_id: c.id, mapping_deleted: changed } } as Handled
        }
        const externalId = metaString(c.metadata, "external_id")
        if (externalId === undefined) return { status: "unmapped", details: { stripe_customer_id: c.id } } as Handled
        // customer.deleted may overtake created/updated; a deleted customer is never re-linked.
        if (yield* events.customerDeleted(c.id))
          return { status: "ignored", details: { reason: "customer_deleted", stripe_customer_id: c.id, external_id: externalId } } as Handled
        const outcome = yield* linker.link({
          externalId,
          stripeCustomerId: c.id,
          name: c.name ?? null,
          email: c.email ?? null,
          source: "webhook",
          createCustomer: true,
          onConflict: "skip"
        })
        const details = {
          stripe_customer_id: c.id,
          external_id: externalId,
          customer_id: outcome.customerId,
          customer_created: outcome.customerCreated,
          mapping: outcome.mapping,
          ...(outcome.conflictWith
            ? {
                conflict_with: {
                  ...(outcome.conflictWith.customerId ? { customer_id: outcome.conflictWith.customerId } : {}),
                  ...(outcome.conflictWith.stripeCustomerId ? { stripe_customer_id: outcome.conflictWith.stripeCustomerId } : {})
                }
              }
            : {})
        }
        return { status: outcome.mapping === "conflict" ? "conflict" : "processed", details } as Handled
      })

    const CUSTOMER_TYPES = new Set(["customer.created", "customer.updated", "customer.deleted"])

    const objectIdOf = (event: EventEnvelope) => {
      const o = event.data.object
      return o !== null && typeof o === "object" && typeof (o as { id?: unknown }).id === "string" ? (o as { id: string }).id : null
    }

    const process = (event: EventEnvelope, scope: TenantScope) =>
      Effect.gen(function* () {
        const id = yield* events.claim({
          stripeEventId: event.id,
          type: event.type,
          stripeCreated: event.created !== undefined ? new Date(event.created * 1000) : null,
          stripeObjectId: objectIdOf(event)
        })
        if (id === null) return { status: "duplicate" as const, details: {} as Record<string, unknown> }
        const handled = yield* (CUSTOMER_TYPES.has(event.type)
          ? processCustomer(event)
          : Effect.succeed<Handled>({ status: "ignored", details: { reason: "event_type_not_handled" } })
        ).pipe(
          Effect.tap((r) => events.finish(id, r.status, r.details)),
          Effect.catchAllCause((cause) =>
            Effect.gen(function* () {
              const message = causeMessage(cause)
              yield* Effect.logError("webhook processing failed", { stripe_event_id: event.id, type: event.type, error: message })
              yield* events.markFailed(id, message).pipe(Effect.catchAllCause(() => Effect.void))
              yield* reporter.report(Cause.squash(cause), {
                area: "webhook",
                code: "webhook_processing_failed",
                tenantId: scope.tenantId,
                environmentId: scope.environmentId,
                extra: { stripe_event_id: event.id, type: event.type }
              })
              return yield* new WebhookProcessingFailed({ eventId: event.id, message })
            })
          )
        )
        return handled
      }).pipe(Effect.provideService(CurrentTenant, scope))

    /** One delivery, end to end. */
    const receive = Effect.fn("WebhookProcessor.receive")(function* (d: WebhookDelivery) {
      yield* Effect.annotateCurrentSpan({ "webhook.route": d.route === null ? "global" : "tenant" })
      let type = "unknown"
      return yield* measured(() => type, Effect.gen(function* () {
        yield* admit(settings, d)
        let routeScope: TenantScope | undefined
        let secret: Redacted.Redacted<string>
        if (d.route !== null) {
          routeScope = yield* knownScope(d.route.tenantId, d.route.environmentId)
          if (routeScope === undefined) return yield* tenantNotFound("no such tenant environment")
          const s = yield* accounts.webhookSecretFor(routeScope)
          if (Option.isNone(s))
            return yield* reject(400, "webhook_secret_not_configured", "this environment has no webhook secret (PUT /v1/stripe/config)", "not_configured")
          secret = s.value
        } else {
          if (Option.isNone(settings.globalSecret))
            return yield* reject(400, "webhook_secret_not_configured", "STRIPE_WEBHOOK_SECRET is not set", "not_configured")
          secret = settings.globalSecret.value
        }
        const event = yield* verify(d.body, d.signature, secret)
        type = event.type
        yield* Effect.annotateCurrentSpan({ "webhook.event_id": event.id, "webhook.type": event.type })
        const scope = routeScope ?? (yield* resolveTenant(event))
        yield* Effect.annotateCurrentSpan({ "tenant.id": scope.tenantId, "environment.id": scope.environmentId })
        const bad = CUSTOMER_TYPES.has(event.type) ? customerFieldProblem(event.data.object) : null
        if (bad !== null) {
          yield* Effect.logWarning("webhook refused: customer field cannot be stored", { stripe_event_id: event.id, field: bad.field, problem: bad.problem })
          return yield* reject(400, "invalid_customer_field", `data.object.${bad.field} ${bad.problem}`, "malformed")
        }
        const r = yield* process(event, scope)
        return { eventId: event.id, type: event.type, status: r.status, scope, details: r.details } satisfies WebhookResult
      }))
    })

    return { receive, settings } as const
  })
}) {}

export type { EnvironmentId, TenantId }

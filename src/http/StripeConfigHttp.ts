/**
 * Handlers of the Stripe configuration group. Keys are validated, checked against Stripe, then
 * encrypted; responses show a masked hint only. Every change is audited (fields, never values).
 */
import { HttpApiBuilder } from "@effect/platform"
import { PgClient } from "@effect/sql-pg"
import { Effect, Option, Redacted } from "effect"
import { HttpConfig, SyncConfig } from "../config/AppConfig.js"
import { InternalError, InvalidInput, NotFound, Conflict, UpstreamFailed } from "../domain/Errors.js"
import { CurrentTenant } from "../domain/Tenant.js"
import { MeterMappingRepo, type MeterMappingRow } from "../repositories/MeterMappingRepo.js"
import { MeterRepo } from "../repositories/MeterRepo.js"
import { AGGREGATION_WINDOWS, StripeConfigRepo, type StoredStripeConfig } from "../repositories/StripeConfigRepo.js"
import { WebhookEventRepo, type WebhookEventRow } from "../repositories/WebhookEventRepo.js"
import { WindowGridRepo } from "../repositories/WindowGridRepo.js"
import { SyncLease } from "../sync/SyncLease.js"
import { AuditLog } from "../security/AuditLog.js"
import { Encryption } from "../security/Encryption.js"
import { StripeAccounts, tenantKeyOf } from "../stripe/StripeAccounts.js"
import { StripeClient } from "../stripe/StripeClient.js"
import type { StripeError } from "../stripe/StripeErrors.js"
import { FlexPriceApi } from "./Api.js"
import { iso, sourceIp } from "./Params.js"
import { orUnavailable } from "./Errors.js"

const KEY_FORMAT = /^(sk|rk)_(test|live)_[A-Za-z0-9_]{4,}$/

/** `sk_test_…4242`: the mode prefix and the last four characters, nothing else. */
export const maskApiKey = (key: string): string => {
  const m = /^((?:sk|rk)_(?:test|live)_)/.exec(key)
  return `${m ? m[1] : ""}…${key.slice(-4)}`
}

/** Stripe failures as API errors; Stripe's messages are already scrubbed of secrets. */
export const stripeFailure = (e: StripeError) => {
  switch (e._tag) {
    case "StripeAuthenticationFailed":
      return InvalidInput.of("stripe_authentication_failed", e.message)
    case "StripeInvalidRequest":
      return InvalidInput.of("stripe_invalid_request", e.message, { stripe_code: e.stripeCode, param: e.param })
    default:
      return new UpstreamFailed({ code: e.code, message: e.message })
  }
}

export const StripeConfigLive = HttpApiBuilder.group(FlexPriceApi, "stripeConfig", (handlers) =>
  Effect.gen(function* () {
    const repo = yield* StripeConfigRepo
    const accounts = yield* StripeAccounts
    const encryption = yield* Encryption
    const audit = yield* AuditLog
    const stripe = yield* StripeClient
    const meters = yield* MeterRepo
    const mappings = yield* MeterMappingRepo
    const webhookEvents = yield* WebhookEventRepo
    const http = yield* HttpConfig
    const sync = yield* SyncConfig
    const sql = yield* PgClient.PgClient
    const lease = yield* SyncLease
    const grids = yield* WindowGridRepo

    const publicBase = (() => {
      const configured = http.publicUrl.trim().replace(/\/+$/, "")
      if (configured !== "") return configured
      const host = http.addr.host.includes(":") ? `[${http.addr.host}]` : http.addr.host
      return `http://${host}:${http.addr.port}`
    })()

    const view = (c: StoredStripeConfig) => ({
      tenant_id: c.scope.tenantId,
      environment_id: c.scope.environmentId,
      api_key: c.apiKeyHint,
      livemode: c.livemode,
      stripe_account_id: c.stripeAccountId,
      webhook_secret_set: c.webhookSecretEncrypted !== null,
      webhook_url: `${publicBase}/webhooks/stripe/${c.scope.tenantId}/${c.scope.environmentId}`,
      event_destination_secret_set: c.eventDestinationSecretEncrypted !== null,
      event_destination_url: `${publicBase}/webhooks/stripe-events/${c.scope.tenantId}/${c.scope.environmentId}`,
      sync_enabled: c.syncEnabled,
      aggregation_window_minutes: c.aggregationWindowMinutes,
      grace_period_minutes: c.gracePeriodMinutes,
      transport: c.transport,
      key_version: c.keyVersion,
      created_at: iso(c.createdAt),
      updated_at: iso(c.updatedAt)
    })

    const mappingView = (m: MeterMappingRow) => ({
      meter_id: m.meterId,
      provider_meter_id: m.providerMeterId,
      stripe_event_name: m.stripeEventName,
      customer_payload_key: m.customerPayloadKey,
      value_payload_key: m.valuePayloadKey,
      formula: m.formula,
      whole_units: m.wholeUnits,
      sync_enabled: m.syncEnabled,
      created_at: iso(m.createdAt),
      updated_at: iso(m.updatedAt)
    })

    const webhookEventView = (w: WebhookEventRow) => ({
      id: w.id,
      stripe_event_id: w.stripeEventId,
      type: w.type,
      status: w.status,
      stripe_object_id: w.stripeObjectId,
      error: w.error,
      details: w.details,
      received_at: iso(w.receivedAt),
      processed_at: w.processedAt ? iso(w.processedAt) : null
    })

    const refFor = (operation: string) =>
      accounts.refForOperation(operation).pipe(
        Effect.catchTags({
          StripeNotConfigured: (e) => Effect.fail(InvalidInput.of(e.code, e.message)),
          DecryptionFailed: (e) => Effect.fail(InternalError.of(e.code, e.message))
        })
      )

    return handlers
      .handle("putConfig", ({ payload }) =>
        Effect.gen(function* () {
          const scope = yield* CurrentTenant
          const stored = Option.getOrUndefined(yield* repo.getStored)
          const changed: Array<string> = []

          let apiKeyEncrypted = stored?.apiKeyEncrypted
          let apiKeyHint = stored?.apiKeyHint
          let livemode = stored?.livemode ?? false
          let accountId = stored?.stripeAccountId ?? null
          if (payload.api_key !== undefined) {
            const key = Redacted.value(payload.api_key).trim()
            const m = KEY_FORMAT.exec(key)
            if (m === null)
              return yield* InvalidInput.of(
                "invalid_api_key_format",
                "api_key must be a Stripe secret or restricted key (sk_test_, sk_live_, rk_test_ or rk_live_)"
              )
            livemode = m[2] === "live"
            const apiKey = Redacted.make(key)
            const info = yield* stripe.retrieveAccount({ tenantKey: tenantKeyOf(scope), apiKey, livemode }).pipe(Effect.mapError(stripeFailure))
            accountId = info.id
            apiKeyEncrypted = yield* encryption.encrypt(apiKey)
            apiKeyHint = maskApiKey(key)
            changed.push("api_key")
          }
          if (apiKeyEncrypted === undefined || apiKeyHint === undefined)
            return yield* InvalidInput.of("api_key_required", "api_key is required the first time Stripe is configured")

          let webhookSecretEncrypted = stored?.webhookSecretEncrypted ?? null
          if (payload.webhook_secret !== undefined) {
            if (payload.webhook_secret === null) webhookSecretEncrypted = null
            else {
              const secret = Redacted.value(payload.webhook_secret).trim()
              if (secret === "" || /\s/.test(secret))
                return yield* InvalidInput.of("invalid_webhook_secret", "webhook_secret must be the endpoint's signing secret (whsec_…)")
              webhookSecretEncrypted = yield* encryption.encrypt(Redacted.make(secret))
            }
            changed.push("webhook_secret")
          }
          let destinationSecretEncrypted: string | null | undefined = undefined
          if (payload.event_destination_secret !== undefined) {
            if (payload.event_destination_secret === null) destinationSecretEncrypted = null
            else {
              const secret = Redacted.value(payload.event_destination_secret).trim()
              if (secret === "" || /\s/.test(secret))
                return yield* InvalidInput.of(
                  "invalid_event_destination_secret",
                  "event_destination_secret must be the event destination's signing secret (whsec_…)"
                )
              destinationSecretEncrypted = yield* encryption.encrypt(Redacted.make(secret))
            }
            changed.push("event_destination_secret")
          }

          const window = payload.aggregation_window_minutes ?? stored?.aggregationWindowMinutes ?? 60
          if (!(AGGREGATION_WINDOWS as ReadonlyArray<number>).includes(window))
            return yield* InvalidInput.of("invalid_aggregation_window", `aggregation_window_minutes must be one of ${AGGREGATION_WINDOWS.join(", ")}`)
          const grace = payload.grace_period_minutes ?? stored?.gracePeriodMinutes ?? sync.gracePeriodMinutes
          if (!Number.isInteger(grace) || grace < 0 || grace > 10_080)
            return yield* InvalidInput.of("invalid_grace_period", "grace_period_minutes must be an integer between 0 and 10080")
          for (const f of ["sync_enabled", "aggregation_window_minutes", "grace_period_minutes", "transport"] as const)
            if (payload[f] !== undefined) changed.push(f)

          const write = repo.upsert({
            apiKeyEncrypted,
            apiKeyHint,
            webhookSecretEncrypted,
            keyVersion: Option.getOrElse(encryption.versionOf(apiKeyEncrypted), () => encryption.newestVersion),
            syncEnabled: payload.sync_enabled ?? stored?.syncEnabled ?? true,
            aggregationWindowMinutes: window,
            gracePeriodMinutes: grace,
            transport: payload.transport ?? stored?.transport ?? "stream",
            livemode,
            stripeAccountId: accountId
          })
          // A new window size must never re-cut a window the ledger holds (src/sync/WindowGrid.ts):
          // it is recorded against the ledger's last window while no sync run of this
          // environment can add one (its lease), in the transaction that stores the size.
          let effectiveFrom = Option.none<Date>()
          // after a disconnect the size the ledger was cut on is pinned (DELETE /v1/stripe/config)
          const moves = stored !== undefined ? window !== stored.aggregationWindowMinutes : yield* grids.recorded
          const saved =
            moves
              ? yield* lease
                  .withLease(
                    scope,
                    sql.withTransaction(
                      Effect.gen(function* () {
                        const current = Option.getOrUndefined(yield* repo.getStored)
                        effectiveFrom = yield* grids.change(current?.aggregationWindowMinutes ?? window, window)
                        return yield* write
                      })
                    ),
                    { wait: "30 seconds" }
                  )
                  .pipe(
                    Effect.catchTags({
                      LeaseBusy: () => Effect.fail(Conflict.of("sync_in_progress", "a sync of this environment is running; retry shortly")),
                      LeaseLost: () => Effect.fail(InternalError.of("sync_interrupted", "the configuration change lost the sync lease; retry"))
                    })
                  )
              : yield* write
          const final =
            destinationSecretEncrypted === undefined
              ? saved
              : Option.getOrElse(yield* repo.setEventDestinationSecret(destinationSecretEncrypted), () => saved)
          yield* accounts.invalidate(scope)
          yield* audit.record({
            action: stored === undefined ? "config.create" : "config.update",
            actor: "api",
            target: "stripe_config",
            sourceIp: yield* sourceIp,
            details: {
              changed_fields: changed,
              key_version: saved.keyVersion,
              stripe_account_id: saved.stripeAccountId,
              livemode: saved.livemode,
              ...Option.match(effectiveFrom, {
                onNone: () => ({}),
                onSome: (d) => ({ aggregation_window_effective_from: d.toISOString() })
              })
            }
          })
          return view(final)
        }).pipe(orUnavailable)
      )
      .handle("getConfig", () =>
        Effect.gen(function* () {
          const stored = yield* repo.getStored
          if (Option.isNone(stored))
            return yield* new NotFound({ code: "stripe_not_configured", message: "Stripe is not configured for this environment" })
          return view(stored.value)
        }).pipe(orUnavailable)
      )
      .handle("testConfig", () =>
        Effect.gen(function* () {
          const ref = yield* refFor("config_test")
          const info = yield* stripe.retrieveAccount(ref).pipe(
            Effect.catchAll((e) =>
              audit
                .record({ action: "config.test", actor: "api", target: "stripe_config", details: { result: e.code } })
                .pipe(Effect.zipRight(Effect.fail(stripeFailure(e))))
            )
          )
          yield* repo.setAccount(info.id, ref.livemode)
          yield* audit.record({
            action: "config.test",
            actor: "api",
            target: "stripe_config",
            sourceIp: yield* sourceIp,
            details: { result: "ok", stripe_account_id: info.id, livemode: ref.livemode }
          })
          return { ok: true as const, account_id: info.id, livemode: ref.livemode, display_name: info.displayName }
        }).pipe(orUnavailable)
      )
      .handle("putMeterMapping", ({ path, payload }) =>
        Effect.gen(function* () {
          const meter = yield* meters.findById(path.meter_id)
          if (Option.isNone(meter)) return yield* NotFound.of("meter", path.meter_id)
          const providerMeterId = payload.provider_meter_id.trim()
          if (providerMeterId === "") return yield* InvalidInput.of("invalid_provider_meter_id", "provider_meter_id is required (mtr_…)")
          const taken = yield* mappings.findByProviderMeterId(providerMeterId)
          if (Option.isSome(taken) && taken.value.meterId !== path.meter_id)
            return yield* Conflict.of("stripe_meter_already_mapped", `Stripe meter ${providerMeterId} is already mapped to meter ${taken.value.meterId}`, {
              meter_id: taken.value.meterId
            })
          const ref = yield* refFor("meter_lookup")
          const sm = yield* stripe.retrieveMeter(ref, providerMeterId).pipe(
            Effect.mapError((e) =>
              e._tag === "StripeInvalidRequest" && e.status === 404
                ? InvalidInput.of("stripe_meter_not_found", `Stripe has no meter ${providerMeterId}`)
                : stripeFailure(e)
            )
          )
          if (sm.status !== "active")
            return yield* InvalidInput.of("stripe_meter_inactive", `Stripe meter ${providerMeterId} is ${sm.status}; only active meters can be mapped`)
          // A pre-aggregated meter keeps only the newest event per customer per hour/day
          // (docs.stripe.com/billing/subscriptions/usage-based/recording-usage, "Event
          // ingestion"): a late delta would overwrite its base batch and the windows of one day
          // would overwrite each other, so Stripe would bill less than was used.
          if (sm.eventTimeWindow !== null)
            return yield* InvalidInput.of(
              "meter_pre_aggregated_unsupported",
              `Stripe meter ${providerMeterId} is pre-aggregated (event_time_window ${sm.eventTimeWindow}): Stripe keeps only the newest event per customer per ${sm.eventTimeWindow}, which would drop late corrections and all but one window of each ${sm.eventTimeWindow}; map a meter without event_time_window`,
              { provider_meter_id: providerMeterId, event_time_window: sm.eventTimeWindow }
            )
          const aggregation = meter.value.aggregationType
          // We send ONE meter event per (customer, meter, window) carrying the window's quantity,
          // so COUNT and SUM meters need Stripe's `sum`: a `count` meter would bill one unit per
          // window, not the quantity.
          const fits = aggregation === "COUNT" || aggregation === "SUM" ? sm.formula === "sum" : sm.formula === "last"
          if (sm.formula !== "sum" && sm.formula !== "count" && sm.formula !== "last")
            return yield* InvalidInput.of("unsupported_stripe_formula", `Stripe meter formula ${sm.formula} is not supported`)
          if (!fits)
            return yield* InvalidInput.of(
              "formula_mismatch",
              `a ${aggregation} meter needs a Stripe meter with formula ${aggregation === "COUNT" || aggregation === "SUM" ? "sum (each window's quantity is sent as one meter event)" : "last"} (got ${sm.formula})`,
              { aggregation, stripe_formula: sm.formula }
            )
          const previous = yield* mappings.get(path.meter_id)
          const saved = yield* mappings.upsert({
            meterId: path.meter_id,
            providerMeterId,
            stripeEventName: sm.eventName,
            customerPayloadKey: sm.customerPayloadKey,
            valuePayloadKey: sm.valuePayloadKey,
            formula: sm.formula as "sum" | "count" | "last",
            wholeUnits: payload.whole_units ?? Option.match(previous, { onNone: () => false, onSome: (p) => p.wholeUnits }),
            syncEnabled: payload.sync_enabled ?? Option.match(previous, { onNone: () => true, onSome: (p) => p.syncEnabled })
          })
          if (Option.isNone(saved))
            return yield* Conflict.of("stripe_meter_already_mapped", `Stripe meter ${providerMeterId} is already mapped to another meter`)
          yield* audit.record({
            action: "meter_mapping.upsert",
            actor: "api",
            target: `meter:${path.meter_id}`,
            sourceIp: yield* sourceIp,
            details: { provider_meter_id: providerMeterId, formula: sm.formula }
          })
          return mappingView(saved.value)
        }).pipe(orUnavailable)
      )
      .handle("listMeterMappings", () => Effect.map(mappings.list, (ms) => ({ mappings: ms.map(mappingView) })).pipe(orUnavailable))
      .handle("getMeterMapping", ({ path }) =>
        Effect.flatMap(mappings.get(path.meter_id), (m) =>
          Option.isNone(m)
            ? Effect.fail(new NotFound({ code: "meter_mapping_not_found", message: `meter ${path.meter_id} has no Stripe mapping` }))
            : Effect.succeed(mappingView(m.value))
        ).pipe(orUnavailable)
      )
      .handle("deleteMeterMapping", ({ path }) =>
        Effect.gen(function* () {
          const removed = yield* mappings.remove(path.meter_id)
          if (!removed) return yield* new NotFound({ code: "meter_mapping_not_found", message: `meter ${path.meter_id} has no Stripe mapping` })
          yield* audit.record({ action: "meter_mapping.delete", actor: "api", target: `meter:${path.meter_id}`, sourceIp: yield* sourceIp })
          return { meter_id: path.meter_id, deleted: true }
        }).pipe(orUnavailable)
      )
      .handle("listWebhookEvents", ({ urlParams }) =>
        Effect.map(webhookEvents.list({ status: urlParams.status, limit: urlParams.limit ?? 100 }), (rows) => ({
          events: rows.map(webhookEventView)
        })).pipe(orUnavailable)
      )
  })
)

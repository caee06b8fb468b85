/**
 * Stripe configuration over HTTP on PGlite and PostgreSQL: validation, connection check, masked
 * view, merge of partial updates, meter mappings, audit rows, key rotation while serving, and
 * that no secret ever shows in a response, a log line, a span or an audit row. The API is called
 * through its typed client, whose every response text is also kept to be searched for secrets.
 */
import { it as live, layer } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, vi } from "vitest"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { MeterMappingRepo } from "../../src/repositories/MeterMappingRepo.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { AuditLog } from "../../src/security/AuditLog.js"
import { Encryption } from "../../src/security/Encryption.js"
import { rotateKeys, verifyMasterKeys } from "../../src/security/KeyRotation.js"
import { StripeAccounts } from "../../src/stripe/StripeAccounts.js"
import { signatureHeader } from "../../src/stripe-emulator/index.js"
import { WebhookProcessor } from "../../src/webhooks/WebhookProcessor.js"
import { forEachBackend } from "../support/app.js"
import { type Contract, openApiContract } from "../support/openapiContract.js"
import * as TestApp from "../support/TestApp.js"
import { apiError, TestTenant } from "../support/TestApp.js"
import { API_KEY, configureTenant, deliverSigned, Emulator, harnessLayer, inTestTenant, key1, key2, rows, tenantWebhookPath, WEBHOOK_SECRET } from "../webhooks/support.js"

const SECRETS = [API_KEY, WEBHOOK_SECRET, key1, key2, API_KEY.slice(8, -4)]
const expectNoSecret = (label: string, text: string) => {
  for (const s of SECRETS) expect(text.includes(s), `${label} contains a secret`).toBe(false)
}

const secret = (value: string) => Redacted.make(value)
const coded = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`Stripe config on ${backend}`, () => {
    const seen: Array<string> = []
    const logged: Array<string> = []
    const spies: Array<{ mockRestore: () => void }> = []
    /** openapi.json's check, keeping every response text it sees. */
    const recording: Contract = {
      check: (response) => {
        seen.push(response.text)
        return openApiContract().check(response)
      },
      assert: (response) => {
        seen.push(response.text)
        openApiContract().assert(response)
      }
    }
    /** The typed client of the test tenant (or `apiKey`'s) whose responses are kept in `seen`. */
    const client = (apiKey?: string) => Effect.flatMap(TestTenant, (t) => TestApp.makeClient(apiKey ?? t.apiKey, recording))

    // installed before the layer below starts the service (hooks run in the order they are declared)
    beforeAll(() => {
      for (const m of ["log", "info", "warn", "error", "debug"] as const) {
        spies.push(
          vi.spyOn(console, m).mockImplementation((...args: Array<unknown>) => {
            logged.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a) ?? String(a))).join(" "))
          })
        )
      }
    })
    afterAll(() => {
      for (const s of spies) s.mockRestore()
    })

    layer(
      harnessLayer(backend, {
        FLEXPRICE_TEST_LOG: "1",
        FLEXPRICE_PUBLIC_URL: "https://billing.example.com/",
        FLEXPRICE_ENCRYPTION_KEYS: `2:${key2},1:${key1}`
      }),
      { excludeTestServices: true }
    )((it) => {
      it.effect("validates the key and the settings before storing anything", () =>
        Effect.gen(function* () {
          const api = yield* client()
          const noKey = yield* apiError(api.stripeConfig.putConfig({ payload: { sync_enabled: true } }))
          expect(coded(noKey)).toEqual(["InvalidInput", "api_key_required"])
          const badPrefix = yield* apiError(api.stripeConfig.putConfig({ payload: { api_key: secret("pk_test_abcdef123456") } }))
          expect(coded(badPrefix)).toEqual(["InvalidInput", "invalid_api_key_format"])
          const rejected = yield* apiError(api.stripeConfig.putConfig({ payload: { api_key: secret("sk_test_thisKeyIsNotKnown9999") } }))
          expect(coded(rejected)).toEqual(["InvalidInput", "stripe_authentication_failed"])
          expect(seen.at(-1)).toContain("stripe_authentication_failed")
          expect(seen.at(-1)).not.toContain("thisKeyIsNotKnown")
          const window = yield* apiError(api.stripeConfig.putConfig({ payload: { api_key: secret(API_KEY), aggregation_window_minutes: 45 } }))
          expect(coded(window)).toEqual(["InvalidInput", "invalid_aggregation_window"])
          const grace = yield* apiError(api.stripeConfig.putConfig({ payload: { api_key: secret(API_KEY), grace_period_minutes: -1 } }))
          expect(coded(grace)).toEqual(["InvalidInput", "invalid_grace_period"])
          expect(coded(yield* apiError(api.stripeConfig.getConfig()))).toEqual(["NotFound", "stripe_not_configured"])
          expect(coded(yield* apiError(api.stripeConfig.testConfig()))).toEqual(["InvalidInput", "stripe_not_configured"])
        })
      )

      it.effect("stores the key encrypted, shows it masked, and keeps fields left out", () =>
        Effect.gen(function* () {
          const api = yield* client()
          const { scope } = yield* TestTenant
          const [put, response] = yield* api.stripeConfig.putConfig({
            payload: { api_key: secret(API_KEY), webhook_secret: secret(WEBHOOK_SECRET), aggregation_window_minutes: 15, grace_period_minutes: 2, transport: "v1" },
            withResponse: true
          })
          expect(response.status).toBe(200)
          expect(put).toMatchObject({
            api_key: "sk_test_…4242",
            livemode: false,
            stripe_account_id: (yield* Emulator).accountId,
            webhook_secret_set: true,
            webhook_url: `https://billing.example.com/webhooks/stripe/${scope.tenantId}/${scope.environmentId}`,
            aggregation_window_minutes: 15,
            grace_period_minutes: 2,
            transport: "v1",
            sync_enabled: true,
            key_version: "2"
          })
          const partial = yield* api.stripeConfig.putConfig({ payload: { sync_enabled: false } })
          expect(partial).toMatchObject({ api_key: "sk_test_…4242", webhook_secret_set: true, aggregation_window_minutes: 15, transport: "v1", sync_enabled: false })
          expect(yield* api.stripeConfig.getConfig()).toEqual(partial)
          const stored = yield* rows("SELECT api_key_encrypted, webhook_secret_encrypted FROM stripe_tenant_configs")
          expect(String(stored[0]!["apiKeyEncrypted"])).toMatch(/^v1:2:/)
          expectNoSecret("stored row", JSON.stringify(stored))
          // contract used by the sync pipeline
          const cfg = yield* inTestTenant(Effect.flatMap(StripeConfigRepo, (r) => r.get))
          expect(Option.getOrThrow(cfg)).toMatchObject({ syncEnabled: false, aggregationWindowMinutes: 15, gracePeriodMinutes: 2, transport: "v1" })
          const enabled = yield* Effect.flatMap(StripeConfigRepo, (r) => r.listSyncEnabled)
          expect(enabled.some((c) => c.scope.tenantId === scope.tenantId)).toBe(false)
          yield* api.stripeConfig.putConfig({ payload: { sync_enabled: true } })
          const ref = yield* inTestTenant(Effect.flatMap(StripeAccounts, (a) => a.refFor))
          expect(Redacted.value(ref.apiKey)).toBe(API_KEY)
          expect(String(ref.apiKey)).not.toContain(API_KEY)
        })
      )

      it.effect("tests the connection with the stored key and audits decryptions and changes without secrets", () =>
        Effect.gen(function* () {
          const api = yield* client()
          const [test, response] = yield* api.stripeConfig.testConfig({ withResponse: true })
          expect(response.status).toBe(200)
          expect(test).toMatchObject({ ok: true, account_id: (yield* Emulator).accountId, livemode: false })
          const audit = yield* inTestTenant(Effect.flatMap(AuditLog, (a) => a.listForTenant(200)))
          const actions = audit.map((r) => r.action)
          expect(actions).toContain("config.create")
          expect(actions).toContain("config.update")
          expect(actions).toContain("config.test")
          const decrypts = audit.filter((r) => r.action === "secret.decrypt").map((r) => (JSON.parse(r.details) as { operation: unknown }).operation)
          expect(decrypts.length).toBeGreaterThan(0)
          expect(decrypts.every((op) => typeof op === "string" && op.length > 0)).toBe(true)
          const update = audit.find((r) => r.action === "config.update")!
          expect((JSON.parse(update.details) as { changed_fields: unknown }).changed_fields).toEqual(["sync_enabled"])
          expectNoSecret("audit rows", JSON.stringify(audit))
        })
      )

      it.effect("maps meters after looking the Stripe meter up, and rejects misfits", () =>
        Effect.gen(function* () {
          const api = yield* client()
          const emulator = yield* Emulator
          const [sumMeter, sumCreated] = yield* api.meters.create({
            payload: { name: "Tokens", event_name: "tokens", aggregation: { type: "SUM", field: "n" } },
            withResponse: true
          })
          const [maxMeter, maxCreated] = yield* api.meters.create({
            payload: { name: "Seats", event_name: "seats", aggregation: { type: "MAX", field: "n" } },
            withResponse: true
          })
          expect([sumCreated.status, maxCreated.status]).toEqual([201, 201])
          const sm = yield* emulator.createMeter({
            display_name: "Tokens",
            event_name: "tokens_used",
            default_aggregation: { formula: "sum" },
            customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
            value_settings: { event_payload_key: "value" }
          })
          const last = yield* emulator.createMeter({ display_name: "Seats", event_name: "seats_max", default_aggregation: { formula: "last" } })
          const inactive = yield* emulator.createMeter({ display_name: "Old", event_name: "old_one", default_aggregation: { formula: "sum" } })
          yield* emulator.deactivateMeter(inactive.id)

          const map = (meterId: string, payload: { provider_meter_id: string; whole_units?: boolean; sync_enabled?: boolean }) =>
            api.stripeConfig.putMeterMapping({ path: { meter_id: meterId }, payload })
          const [put, putResponse] = yield* api.stripeConfig.putMeterMapping({
            path: { meter_id: sumMeter.id },
            payload: { provider_meter_id: sm.id, whole_units: true },
            withResponse: true
          })
          expect(putResponse.status).toBe(200)
          expect(put).toMatchObject({
            meter_id: sumMeter.id,
            provider_meter_id: sm.id,
            stripe_event_name: "tokens_used",
            customer_payload_key: "stripe_customer_id",
            value_payload_key: "value",
            formula: "sum",
            whole_units: true,
            sync_enabled: true
          })
          expect(coded(yield* apiError(map(maxMeter.id, { provider_meter_id: sm.id })))).toEqual(["Conflict", "stripe_meter_already_mapped"])
          expect(coded(yield* apiError(map(sumMeter.id, { provider_meter_id: last.id })))).toEqual(["InvalidInput", "formula_mismatch"])
          // a Stripe `count` meter would bill one unit per window-event, not the window's quantity
          const countMeter = yield* emulator.createMeter({ display_name: "Calls", event_name: "calls_n", default_aggregation: { formula: "count" } })
          expect(coded(yield* apiError(map(sumMeter.id, { provider_meter_id: countMeter.id })))).toEqual(["InvalidInput", "formula_mismatch"])
          expect(coded(yield* apiError(map(maxMeter.id, { provider_meter_id: inactive.id })))).toEqual(["InvalidInput", "stripe_meter_inactive"])
          expect(coded(yield* apiError(map(maxMeter.id, { provider_meter_id: "mtr_doesnotexist" })))).toEqual(["InvalidInput", "stripe_meter_not_found"])
          expect(coded(yield* apiError(map("mtr_nosuchflexpricemeter", { provider_meter_id: sm.id })))).toEqual(["NotFound", "meter_not_found"])
          const ok2 = yield* map(maxMeter.id, { provider_meter_id: last.id, sync_enabled: false })
          expect(ok2).toMatchObject({ formula: "last", sync_enabled: false })

          const list = yield* api.stripeConfig.listMeterMappings()
          expect(list.mappings.map((m) => m.meter_id).sort()).toEqual([sumMeter.id, maxMeter.id].sort())
          const enabled = yield* inTestTenant(Effect.flatMap(MeterMappingRepo, (r) => r.listEnabled))
          expect(enabled.map((m) => m.providerMeterId)).toEqual([sm.id])
          expect(yield* api.stripeConfig.deleteMeterMapping({ path: { meter_id: maxMeter.id } })).toEqual({ meter_id: maxMeter.id, deleted: true })
          const gone = yield* apiError(api.stripeConfig.getMeterMapping({ path: { meter_id: maxMeter.id } }))
          expect(coded(gone)).toEqual(["NotFound", "meter_mapping_not_found"])
          const other = yield* TestApp.newTenant("other")
          const isolated = yield* (yield* client(other.apiKey)).stripeConfig.listMeterMappings()
          expect(isolated.mappings).toEqual([])
        })
      )

      it.effect("rotates every secret to the newest key while requests keep being served", () =>
        Effect.gen(function* () {
          yield* configureTenant
          const [dest, destResponse] = yield* (yield* TestApp.ApiClient).stripeConfig.putConfig({
            payload: { event_destination_secret: secret("whsec_rotation_destination") },
            withResponse: true
          })
          expect([destResponse.status, dest.event_destination_secret_set]).toEqual([200, true])
          const ring = Encryption.layerFromKeys([
            { version: "2", key: key2 },
            { version: "1", key: key1 }
          ])
          // The service reads with [2, 1]; put every stored secret back under the older key 1, as
          // if key 2 had just been added to FLEXPRICE_ENCRYPTION_KEYS.
          yield* Effect.gen(function* () {
            const repo = yield* StripeConfigRepo
            const current = yield* Encryption
            const old = yield* Encryption.fromKeys([{ version: "1", key: key1 }])
            for (const row of yield* repo.listAllStored) {
              for (const [column, cipher] of [
                ["api_key", row.apiKeyEncrypted],
                ["webhook_secret", row.webhookSecretEncrypted],
                ["event_destination_secret", row.eventDestinationSecretEncrypted]
              ] as const) {
                if (cipher === null) continue
                const plain = yield* current.decrypt(cipher)
                yield* repo.swapCiphertext(row.scope, column, cipher, yield* old.encrypt(plain), "1")
              }
            }
          }).pipe(Effect.orDie)
          const before = yield* rows(`SELECT api_key_encrypted, webhook_secret_encrypted FROM stripe_tenant_configs`)
          expect(before.every((r) => String(r["apiKeyEncrypted"]).startsWith("v1:1:") && String(r["webhookSecretEncrypted"]).startsWith("v1:1:"))).toBe(true)
          const path = yield* tenantWebhookPath
          const serveLoop = Effect.gen(function* () {
            const statuses: Array<number> = []
            for (let i = 0; i < 15; i++) {
              const payload = JSON.stringify({ id: `evt_rot_${i}`, type: "customer.updated", created: Math.floor(Date.now() / 1000), data: { object: { id: `cus_rot_${i}` } } })
              const r = yield* deliverSigned(path, payload, [WEBHOOK_SECRET])
              statuses.push(r.status)
              seen.push(r.text)
            }
            return statuses
          })
          const rotate = Effect.provide(rotateKeys(), Layer.mergeAll(StripeConfigRepo.Default, AuditLog.Default, ring)).pipe(Effect.orDie)
          const [statuses, report] = yield* Effect.all([serveLoop, rotate], { concurrency: 2 })
          expect(statuses.every((s) => s === 200)).toBe(true)
          expect(report).toMatchObject({ newestVersion: "2", failed: [] })
          expect(report.rotated).toBeGreaterThanOrEqual(3)
          const after = yield* rows(
            `SELECT api_key_encrypted, webhook_secret_encrypted, event_destination_secret_encrypted, key_version FROM stripe_tenant_configs`
          )
          for (const r of after) {
            expect(String(r["apiKeyEncrypted"])).toMatch(/^v1:2:/)
            expect(String(r["webhookSecretEncrypted"])).toMatch(/^v1:2:/)
            expect(String(r["eventDestinationSecretEncrypted"])).toMatch(/^v1:2:/)
            expect(r["keyVersion"]).toBe("2")
          }
          // every secret still reads back, under the new ring
          const stored = yield* inTestTenant(Effect.flatMap(StripeConfigRepo, (r) => r.getStored))
          const plain = yield* Effect.provide(Effect.flatMap(Encryption, (e) => e.decrypt(Option.getOrThrow(stored).apiKeyEncrypted)), ring)
          expect(Redacted.value(plain)).toBe(API_KEY)
          expect(yield* rotate).toMatchObject({ rotated: 0, failed: [] })
          // the old ring alone no longer reads the rotated rows: start-up refuses with a clear message
          const check = yield* Effect.flip(
            Effect.provide(verifyMasterKeys(), Layer.merge(Encryption.layerFromKeys([{ version: "1", key: key1 }]), StripeConfigRepo.Default))
          )
          expect(check.message).toMatch(/version "2".*FLEXPRICE_ENCRYPTION_KEYS does not list/)
          expectNoSecret("rotation error", check.message)
          const audit = yield* inTestTenant(Effect.flatMap(AuditLog, (a) => a.listForTenant(500)))
          expect(audit.some((r) => r.action === "keys.rotate" && (JSON.parse(r.details) as { to_version: unknown }).to_version === "2")).toBe(true)
        })
      )

      it.effect("keeps secrets out of spans", () =>
        Effect.gen(function* () {
          const { scope } = yield* TestTenant
          const spans = yield* Effect.gen(function* () {
            const processor = yield* WebhookProcessor
            const payload = JSON.stringify({ id: "evt_span", type: "customer.created", created: Math.floor(Date.now() / 1000), data: { object: { id: "cus_span", metadata: { external_id: "span-1" } } } })
            const result = yield* processor.receive({
              route: scope,
              body: new TextEncoder().encode(payload),
              signature: signatureHeader(payload, [WEBHOOK_SECRET], Math.floor(Date.now() / 1000)),
              remoteAddress: "127.0.0.1",
              forwardedFor: undefined
            })
            expect(result.status).toBe("processed")
            const accounts = yield* StripeAccounts
            yield* accounts.invalidate(scope)
            yield* Effect.provideService(accounts.refForOperation("span_test"), CurrentTenant, scope)
            const t = yield* TelemetryTest
            return yield* t.spans
          }).pipe(Effect.provide(Telemetry.layerTest))
          const list = spans as ReadonlyArray<{ name: string; attributes: unknown; events: unknown }>
          expect(list.map((s) => s.name)).toContain("WebhookProcessor.receive")
          const receive = list.find((s) => s.name === "WebhookProcessor.receive")!
          expect(receive.attributes).toMatchObject({ "webhook.event_id": "evt_span", "webhook.type": "customer.created", "webhook.outcome": "processed" })
          expectNoSecret("spans", JSON.stringify(list.map((s) => ({ n: s.name, a: s.attributes, e: s.events }))))
        })
      )

      it("never shows a secret in any response or log line", () => {
        expect(seen.length).toBeGreaterThan(10)
        for (const t of seen) expectNoSecret("response", t)
        expect(logged.length).toBeGreaterThan(0)
        for (const l of logged) expectNoSecret("log", l)
      })
    })
  })
})

describe("master keys at start-up", () => {
  live.live("a malformed FLEXPRICE_ENCRYPTION_KEYS stops start-up with a message naming the variable, not the key", () =>
    Effect.gen(function* () {
      const bad = `1:${key1.slice(0, 20)}`
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(TestApp.layer({ env: { FLEXPRICE_ENCRYPTION_KEYS: bad } }))))
      expect(Exit.isFailure(exit)).toBe(true)
      const why = Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""
      expect(why).toMatch(/FLEXPRICE_ENCRYPTION_KEYS/)
      expect(why).not.toContain(key1.slice(0, 20))
    })
  )
})

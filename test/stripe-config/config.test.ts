/**
 * Stripe configuration over HTTP on PGlite and PostgreSQL: validation, connection check, masked
 * view, merge of partial updates, meter mappings, audit rows, key rotation while serving, and
 * that no secret ever shows in a response, a log line, a span or an audit row.
 */
import { Effect, Layer, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { CurrentTenant } from "../../src/domain/Tenant.js"
import { StripeConfigRepo } from "../../src/repositories/StripeConfigRepo.js"
import { AuditLog } from "../../src/security/AuditLog.js"
import { Encryption } from "../../src/security/Encryption.js"
import { rotateKeys, verifyMasterKeys } from "../../src/security/KeyRotation.js"
import { Telemetry, TelemetryTest } from "../../src/observability/Telemetry.js"
import { StripeAccounts } from "../../src/stripe/StripeAccounts.js"
import { signatureHeader } from "../../src/stripe-emulator/index.js"
import type { Method } from "../support/routes.js"
import { WebhookProcessor } from "../../src/webhooks/WebhookProcessor.js"
import { forEachBackend, provided, startTestApp, type Backend } from "../support/app.js"
import { API_KEY, configure, key1, key2, post, startHarness, WEBHOOK_SECRET, type Harness } from "../webhooks/support.js"

const SECRETS = [API_KEY, WEBHOOK_SECRET, key1, key2, API_KEY.slice(8, -4)]
const expectNoSecret = (label: string, text: string) => {
  for (const s of SECRETS) expect(text.includes(s), `${label} contains a secret`).toBe(false)
}

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`Stripe config on ${backend}`, () => {
    let h: Harness
    const seen: Array<string> = []
    const logged: Array<string> = []
    const spies: Array<{ mockRestore: () => void }> = []
    const request = async <M extends Method, P extends string>(method: M, path: P, body?: unknown, apiKey?: string) => {
      const r = await h.app.request(method, path, body, apiKey !== undefined ? { apiKey } : {})
      seen.push(r.text)
      return r
    }

    beforeAll(async () => {
      for (const m of ["log", "info", "warn", "error", "debug"] as const) {
        const original = console[m].bind(console)
        spies.push(
          vi.spyOn(console, m).mockImplementation((...args: Array<unknown>) => {
            logged.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a) ?? String(a))).join(" "))
            void original
          })
        )
      }
      h = await startHarness(backend, {
        FLEXPRICE_TEST_LOG: "1",
        FLEXPRICE_PUBLIC_URL: "https://billing.example.com/",
        FLEXPRICE_ENCRYPTION_KEYS: `2:${key2},1:${key1}`
      })
    })
    afterAll(async () => {
      await h?.close()
      for (const s of spies) s.mockRestore()
    })

    it("validates the key and the settings before storing anything", async () => {
      const noKey = await request("PUT", "/v1/stripe/config", { sync_enabled: true })
      expect([noKey.status, noKey.error.code]).toEqual([400, "api_key_required"])
      const badPrefix = await request("PUT", "/v1/stripe/config", { api_key: "pk_test_abcdef123456" })
      expect([badPrefix.status, badPrefix.error.code]).toEqual([400, "invalid_api_key_format"])
      const rejected = await request("PUT", "/v1/stripe/config", { api_key: "sk_test_thisKeyIsNotKnown9999" })
      expect([rejected.status, rejected.error.code]).toEqual([400, "stripe_authentication_failed"])
      expect(rejected.text).not.toContain("thisKeyIsNotKnown")
      const window = await request("PUT", "/v1/stripe/config", { api_key: API_KEY, aggregation_window_minutes: 45 })
      expect([window.status, window.error.code]).toEqual([400, "invalid_aggregation_window"])
      const grace = await request("PUT", "/v1/stripe/config", { api_key: API_KEY, grace_period_minutes: -1 })
      expect([grace.status, grace.error.code]).toEqual([400, "invalid_grace_period"])
      const get = await request("GET", "/v1/stripe/config")
      expect([get.status, get.error.code]).toEqual([404, "stripe_not_configured"])
      const test = await request("POST", "/v1/stripe/config/test")
      expect([test.status, test.error.code]).toEqual([400, "stripe_not_configured"])
    })

    it("stores the key encrypted, shows it masked, and keeps fields left out", async () => {
      const put = await request("PUT", "/v1/stripe/config", {
        api_key: API_KEY,
        webhook_secret: WEBHOOK_SECRET,
        aggregation_window_minutes: 15,
        grace_period_minutes: 2,
        transport: "v1"
      })
      expect(put.status).toBe(200)
      expect(put.body).toMatchObject({
        api_key: "sk_test_…4242",
        livemode: false,
        stripe_account_id: h.emulator.accountId,
        webhook_secret_set: true,
        webhook_url: `https://billing.example.com/webhooks/stripe/${h.app.scope.tenantId}/${h.app.scope.environmentId}`,
        aggregation_window_minutes: 15,
        grace_period_minutes: 2,
        transport: "v1",
        sync_enabled: true,
        key_version: "2"
      })
      const partial = await request("PUT", "/v1/stripe/config", { sync_enabled: false })
      expect(partial.status).toBe(200)
      expect(partial.body).toMatchObject({ api_key: "sk_test_…4242", webhook_secret_set: true, aggregation_window_minutes: 15, transport: "v1", sync_enabled: false })
      const get = await request("GET", "/v1/stripe/config")
      expect(get.body).toEqual(partial.body)
      const rows = await h.sql("SELECT api_key_encrypted, webhook_secret_encrypted FROM stripe_tenant_configs")
      expect(String(rows[0]!["apiKeyEncrypted"])).toMatch(/^v1:2:/)
      expectNoSecret("stored row", JSON.stringify(rows))
      // contract used by the sync pipeline
      const cfg = await h.inTenant(Effect.flatMap(StripeConfigRepo, (r) => r.get))
      expect(Option.getOrThrow(cfg)).toMatchObject({ syncEnabled: false, aggregationWindowMinutes: 15, gracePeriodMinutes: 2, transport: "v1" })
      const enabled = await h.app.run(Effect.flatMap(StripeConfigRepo, (r) => r.listSyncEnabled))
      expect(enabled.some((c) => c.scope.tenantId === h.app.scope.tenantId)).toBe(false)
      await request("PUT", "/v1/stripe/config", { sync_enabled: true })
      const ref = await h.inTenant(Effect.flatMap(StripeAccounts, (a) => a.refFor))
      expect(Redacted.value(ref.apiKey)).toBe(API_KEY)
      expect(String(ref.apiKey)).not.toContain(API_KEY)
    })

    it("tests the connection with the stored key and audits decryptions and changes without secrets", async () => {
      const test = await request("POST", "/v1/stripe/config/test")
      expect(test.status).toBe(200)
      expect(test.body).toMatchObject({ ok: true, account_id: h.emulator.accountId, livemode: false })
      const audit = await h.inTenant(Effect.flatMap(AuditLog, (a) => a.listForTenant(200)))
      const actions = audit.map((r) => r.action)
      expect(actions).toContain("config.create")
      expect(actions).toContain("config.update")
      expect(actions).toContain("config.test")
      const decrypts = audit.filter((r) => r.action === "secret.decrypt").map((r) => JSON.parse(r.details).operation)
      expect(decrypts.length).toBeGreaterThan(0)
      expect(decrypts.every((op: string) => typeof op === "string" && op.length > 0)).toBe(true)
      const update = audit.find((r) => r.action === "config.update")!
      expect(JSON.parse(update.details).changed_fields).toEqual(["sync_enabled"])
      expectNoSecret("audit rows", JSON.stringify(audit))
    })

    it("maps meters after looking the Stripe meter up, and rejects misfits", async () => {
      const sumMeter = await request("POST", "/v1/meters", { name: "Tokens", event_name: "tokens", aggregation: { type: "SUM", field: "n" } })
      const maxMeter = await request("POST", "/v1/meters", { name: "Seats", event_name: "seats", aggregation: { type: "MAX", field: "n" } })
      expect([sumMeter.status, maxMeter.status]).toEqual([201, 201])
      const sm = await Effect.runPromise(
        h.emulator.createMeter({
          display_name: "Tokens",
          event_name: "tokens_used",
          default_aggregation: { formula: "sum" },
          customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
          value_settings: { event_payload_key: "value" }
        })
      )
      const last = await Effect.runPromise(h.emulator.createMeter({ display_name: "Seats", event_name: "seats_max", default_aggregation: { formula: "last" } }))
      const inactive = await Effect.runPromise(h.emulator.createMeter({ display_name: "Old", event_name: "old_one", default_aggregation: { formula: "sum" } }))
      await Effect.runPromise(h.emulator.deactivateMeter(inactive.id))

      const put = await request("PUT", `/v1/stripe/meter-mappings/${sumMeter.data.id}`, { provider_meter_id: sm.id, whole_units: true })
      expect(put.status).toBe(200)
      expect(put.body).toMatchObject({
        meter_id: sumMeter.data.id,
        provider_meter_id: sm.id,
        stripe_event_name: "tokens_used",
        customer_payload_key: "stripe_customer_id",
        value_payload_key: "value",
        formula: "sum",
        whole_units: true,
        sync_enabled: true
      })
      const dupe = await request("PUT", `/v1/stripe/meter-mappings/${maxMeter.data.id}`, { provider_meter_id: sm.id })
      expect([dupe.status, dupe.error.code]).toEqual([409, "stripe_meter_already_mapped"])
      const mismatch = await request("PUT", `/v1/stripe/meter-mappings/${sumMeter.data.id}`, { provider_meter_id: last.id })
      expect([mismatch.status, mismatch.error.code]).toEqual([400, "formula_mismatch"])
      // a Stripe `count` meter would bill one unit per window-event, not the window's quantity
      const countMeter = await Effect.runPromise(h.emulator.createMeter({ display_name: "Calls", event_name: "calls_n", default_aggregation: { formula: "count" } }))
      const mismatchCount = await request("PUT", `/v1/stripe/meter-mappings/${sumMeter.data.id}`, { provider_meter_id: countMeter.id })
      expect([mismatchCount.status, mismatchCount.error.code]).toEqual([400, "formula_mismatch"])
      const mismatch2 = await request("PUT", `/v1/stripe/meter-mappings/${maxMeter.data.id}`, { provider_meter_id: inactive.id })
      expect([mismatch2.status, mismatch2.error.code]).toEqual([400, "stripe_meter_inactive"])
      const unknown = await request("PUT", `/v1/stripe/meter-mappings/${maxMeter.data.id}`, { provider_meter_id: "mtr_doesnotexist" })
      expect([unknown.status, unknown.error.code]).toEqual([400, "stripe_meter_not_found"])
      const noMeter = await request("PUT", `/v1/stripe/meter-mappings/mtr_nosuchflexpricemeter`, { provider_meter_id: sm.id })
      expect(noMeter.status).toBe(404)
      const ok2 = await request("PUT", `/v1/stripe/meter-mappings/${maxMeter.data.id}`, { provider_meter_id: last.id, sync_enabled: false })
      expect(ok2.body).toMatchObject({ formula: "last", sync_enabled: false })

      const list = await request("GET", "/v1/stripe/meter-mappings")
      expect(list.data.mappings.map((m) => m.meter_id).sort()).toEqual([sumMeter.data.id, maxMeter.data.id].sort())
      const { MeterMappingRepo } = await import("../../src/repositories/MeterMappingRepo.js")
      const enabled = await h.inTenant(Effect.flatMap(MeterMappingRepo, (r) => r.listEnabled))
      expect(enabled.map((m) => m.providerMeterId)).toEqual([sm.id])
      const del = await request("DELETE", `/v1/stripe/meter-mappings/${maxMeter.data.id}`)
      expect(del.body).toEqual({ meter_id: maxMeter.data.id, deleted: true })
      const gone = await request("GET", `/v1/stripe/meter-mappings/${maxMeter.data.id}`)
      expect([gone.status, gone.error.code]).toEqual([404, "meter_mapping_not_found"])
      const other = await h.app.newTenant("other")
      const isolated = await request("GET", "/v1/stripe/meter-mappings", undefined, other.apiKey)
      expect(isolated.data.mappings).toEqual([])
    })

    it("rotates every secret to the newest key while requests keep being served", async () => {
      await configure(h)
      const dest = await h.app.request("PUT", "/v1/stripe/config", { event_destination_secret: "whsec_rotation_destination" })
      expect([dest.status, dest.data.event_destination_secret_set]).toEqual([200, true])
      const ring = Encryption.layerFromKeys([
        { version: "2", key: key2 },
        { version: "1", key: key1 }
      ])
      // The service reads with [2, 1]; put every stored secret back under the older key 1, as
      // if key 2 had just been added to FLEXPRICE_ENCRYPTION_KEYS.
      await h.app.run(
        Effect.gen(function* () {
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
      )
      const before = await h.sql(`SELECT api_key_encrypted, webhook_secret_encrypted FROM stripe_tenant_configs`)
      expect(before.every((r) => String(r["apiKeyEncrypted"]).startsWith("v1:1:") && String(r["webhookSecretEncrypted"]).startsWith("v1:1:"))).toBe(true)
      const serveLoop = async () => {
        const statuses: Array<number> = []
        for (let i = 0; i < 15; i++) {
          const payload = JSON.stringify({ id: `evt_rot_${i}`, type: "customer.updated", created: Math.floor(Date.now() / 1000), data: { object: { id: `cus_rot_${i}` } } })
          const r = await post(`${h.app.baseUrl}${h.webhookPath}`, payload, {
            "stripe-signature": signatureHeader(payload, [WEBHOOK_SECRET], Math.floor(Date.now() / 1000))
          })
          statuses.push(r.status)
          seen.push(r.text)
        }
        return statuses
      }
      const withRing = <A, E, R>(e: Effect.Effect<A, E, R>) =>
        Effect.provide(e, Layer.merge(ring, Layer.empty)) as Effect.Effect<A, E, Exclude<R, Encryption>>
      const [statuses, report] = await Promise.all([
        serveLoop(),
        h.app.run(provided(withRing(Effect.provide(rotateKeys, Layer.merge(StripeConfigRepo.Default, AuditLog.Default)).pipe(Effect.orDie))))
      ])
      expect(statuses.every((s) => s === 200)).toBe(true)
      expect(report).toMatchObject({ newestVersion: "2", failed: [] })
      expect(report.rotated).toBeGreaterThanOrEqual(3)
      const rows = await h.sql(
        `SELECT api_key_encrypted, webhook_secret_encrypted, event_destination_secret_encrypted, key_version FROM stripe_tenant_configs`
      )
      for (const r of rows) {
        expect(String(r["apiKeyEncrypted"])).toMatch(/^v1:2:/)
        expect(String(r["webhookSecretEncrypted"])).toMatch(/^v1:2:/)
        expect(String(r["eventDestinationSecretEncrypted"])).toMatch(/^v1:2:/)
        expect(r["keyVersion"]).toBe("2")
      }
      // every secret still reads back, under the new ring
      const stored = await h.inTenant(Effect.flatMap(StripeConfigRepo, (r) => r.getStored))
      const plain = await h.app.run(
        withRing(Effect.flatMap(Encryption, (e) => e.decrypt(Option.getOrThrow(stored).apiKeyEncrypted))) as Effect.Effect<Redacted.Redacted<string>, unknown, never>
      )
      expect(Redacted.value(plain)).toBe(API_KEY)
      const again = await h.app.run(provided(withRing(Effect.provide(rotateKeys, Layer.merge(StripeConfigRepo.Default, AuditLog.Default)).pipe(Effect.orDie))))
      expect(again).toMatchObject({ rotated: 0, failed: [] })
      // the old ring alone no longer reads the rotated rows: start-up refuses with a clear message
      const check = await h.app.run(
        provided(Effect.flip(Effect.provide(verifyMasterKeys, Layer.merge(Encryption.layerFromKeys([{ version: "1", key: key1 }]), StripeConfigRepo.Default))))
      )
      expect(check.message).toMatch(/version "2".*FLEXPRICE_ENCRYPTION_KEYS does not list/)
      expectNoSecret("rotation error", check.message)
      const audit = await h.inTenant(Effect.flatMap(AuditLog, (a) => a.listForTenant(500)))
      expect(audit.some((r) => r.action === "keys.rotate" && JSON.parse(r.details).to_version === "2")).toBe(true)
    })

    it("keeps secrets out of spans", async () => {
      const spans = await h.app.run(
        Effect.gen(function* () {
          const processor = yield* WebhookProcessor
          const payload = JSON.stringify({ id: "evt_span", type: "customer.created", created: Math.floor(Date.now() / 1000), data: { object: { id: "cus_span", metadata: { external_id: "span-1" } } } })
          const result = yield* processor.receive({
            route: h.app.scope,
            body: new TextEncoder().encode(payload),
            signature: signatureHeader(payload, [WEBHOOK_SECRET], Math.floor(Date.now() / 1000)),
            remoteAddress: "127.0.0.1",
            forwardedFor: undefined
          })
          expect(result.status).toBe("processed")
          const accounts = yield* StripeAccounts
          yield* accounts.invalidate(h.app.scope)
          yield* Effect.provideService(accounts.refForOperation("span_test"), CurrentTenant, h.app.scope)
          const t = yield* TelemetryTest
          return yield* t.spans
        }).pipe(Effect.provide(Telemetry.layerTest))
      )
      const list = spans as ReadonlyArray<{ name: string; attributes: unknown; events: unknown }>
      expect(list.map((s) => s.name)).toContain("WebhookProcessor.receive")
      const receive = list.find((s) => s.name === "WebhookProcessor.receive")!
      expect(receive.attributes).toMatchObject({ "webhook.event_id": "evt_span", "webhook.type": "customer.created", "webhook.outcome": "processed" })
      expectNoSecret("spans", JSON.stringify(list.map((s) => ({ n: s.name, a: s.attributes, e: s.events }))))
    })

    it("never shows a secret in any response or log line", () => {
      expect(seen.length).toBeGreaterThan(10)
      for (const t of seen) expectNoSecret("response", t)
      expect(logged.length).toBeGreaterThan(0)
      for (const l of logged) expectNoSecret("log", l)
    })
  })
})

describe("master keys at start-up", () => {
  it("a malformed FLEXPRICE_ENCRYPTION_KEYS stops start-up with a message naming the variable, not the key", async () => {
    const bad = `1:${key1.slice(0, 20)}`
    const err = await startTestApp({ env: { FLEXPRICE_ENCRYPTION_KEYS: bad } }).then(
      () => undefined,
      (e: unknown) => e
    )
    expect(String(err)).toMatch(/FLEXPRICE_ENCRYPTION_KEYS/)
    expect(String(err)).not.toContain(key1.slice(0, 20))
  })
})

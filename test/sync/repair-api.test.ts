/**
 * Repairs and records over HTTP (issue #12 item 9, issue #18 item 6):
 * - POST /v1/stripe/sync/batches/retry re-queues failed batches after a fix, audited, with the
 *   same identifier (a resend cannot bill twice);
 * - GET/DELETE /v1/customers/{id}/stripe-mapping, GET /v1/audit-log (filters, cursor), DELETE
 *   /v1/stripe/config (disconnect keeps the ledger), each tenant-isolated, with stable codes.
 * Expected totals come from the raw events (test/support/oracle.ts).
 *
 * The tests run in order on one service per backend, whose set-up (a layer) leaves two of the
 * `ghost` customer's batches failed at the retry cap; each later test builds on what the earlier
 * ones left. Retry requests go through `raw`, as sent bodies (`{}` relies on the endpoint's
 * defaults, which the typed client would fill in itself).
 */
import { layer } from "@effect/vitest"
import { Context, DateTime, Effect, Layer, Redacted } from "effect"
import { expect } from "vitest"
import { BatchRetryResult } from "../../src/http/SyncApi.js"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { ApiClient, apiError, inTestTenant, newTenant, raw } from "../support/TestApp.js"
import { hoursAgo, type MeterSetup, STRIPE_KEY } from "./support.js"
import { batches, configure, customer, ingest, meter, stripeTotal, sync, SyncEmulator, syncLayer } from "./syncLayer.js"

/** FLEXPRICE_SYNC_MAX_RETRIES default. */
const RETRY_CAP = 5

/** What the suite's service is set up with before its tests. */
class Setup extends Context.Tag("test/RepairSetup")<Setup, {
  readonly other: Effect.Effect.Success<ReturnType<typeof newTenant>>
  readonly m: MeterSetup
  readonly good: { readonly customerId: string; readonly stripeId: string }
  readonly ghost: { readonly customerId: string }
}>() {}

const setup = Layer.effect(
  Setup,
  Effect.gen(function* () {
    yield* configure({ transport: "v1" })
    const other = yield* newTenant("other")
    const m = yield* meter("tokens", { aggregation: "SUM", field: "t" })
    const good = yield* customer("good")
    // mapped to a Stripe customer that does not exist: Stripe refuses each of its events
    const ghost = yield* (yield* ApiClient).customers.create({ payload: { external_id: "ghost" } })
    yield* inTestTenant(Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId: ghost.id, providerCustomerId: "cus_DoesNotExist000", source: "api" })))
    yield* ingest([
      { event_id: "g1", event_name: "tokens", external_customer_id: "good", timestamp: hoursAgo(3, 5), properties: { t: "1.25" } },
      { event_id: "x1", event_name: "tokens", external_customer_id: "ghost", timestamp: hoursAgo(3, 6), properties: { t: "2.5" } },
      { event_id: "x2", event_name: "tokens", external_customer_id: "ghost", timestamp: hoursAgo(2, 6), properties: { t: "0.125" } }
    ])
    for (let i = 0; i < RETRY_CAP + 1; i++) yield* sync()
    return { other, m, good, ghost: { customerId: ghost.id } }
  })
)

/** POST /v1/stripe/sync/batches/retry with `body` as the test tenant (or `apiKey`). */
const retry = (body: Record<string, unknown>, apiKey?: string) =>
  raw("POST", "/v1/stripe/sync/batches/retry", { body: JSON.stringify(body), ...(apiKey === undefined ? {} : { apiKey }) })

const coded = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]

const instant = (iso: string) => DateTime.unsafeMake(iso)

forEachBackend(["pglite", "postgres"], (backend) =>
  layer(setup.pipe(Layer.provideMerge(syncLayer({ backend }))), { excludeTestServices: true })(`repair and record endpoints on ${backend}`, (it) => {
    it.effect("re-queues failed batches after a fix: audited, same identifiers, Stripe gets each unit once", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const emulator = yield* SyncEmulator
        const { other, m, good, ghost } = yield* Setup
        const failedBefore = (yield* batches).filter((b) => b.syncStatus === "failed")
        expect(failedBefore.map((b) => [b.customerId, b.retryCount, b.errorCode])).toEqual([
          [ghost.customerId, RETRY_CAP, "resource_missing"],
          [ghost.customerId, RETRY_CAP, "resource_missing"]
        ])
        // bad filters: stable codes
        const badStatus = yield* retry({ status: "synced" })
        expect([badStatus.status, badStatus.error?.code]).toEqual([400, "invalid_request"])
        const badDate = yield* retry({ from: "yesterday" })
        expect([badDate.status, badDate.error?.code]).toEqual([400, "invalid_parameter"])
        const badRange = yield* retry({ from: hoursAgo(1), to: hoursAgo(2) })
        expect([badRange.status, badRange.error?.code]).toEqual([400, "invalid_range"])

        // the fix: the customer is mapped to its real Stripe customer
        const stripeId = (yield* emulator.createCustomer({})).id
        yield* inTestTenant(
          Effect.gen(function* () {
            const repo = yield* CustomerMappingRepo
            const row = yield* repo.findByCustomerId(ghost.customerId)
            if (row._tag === "None") return yield* Effect.dieMessage("no mapping")
            yield* repo.reassign(row.value.id, { customerId: ghost.customerId, providerCustomerId: stripeId, source: "api" })
          })
        )
        // capped: a run does not retry them
        yield* sync()
        expect((yield* batches).filter((b) => b.syncStatus === "failed").length).toBe(2)

        // another tenant's call re-queues none of them
        const foreign = yield* retry({}, other.apiKey)
        expect(foreign.status).toBe(200)
        expect(foreign.as(BatchRetryResult).requeued).toBe(0)

        const dry = yield* retry({ error_code: "resource_missing", dry_run: true })
        expect(dry.as(BatchRetryResult)).toMatchObject({ requeued: 2, dry_run: true })
        expect((yield* batches).filter((b) => b.syncStatus === "failed").length).toBe(2)

        // a filter that matches one window only
        const one = yield* retry({
          status: "failed",
          meter_id: m.meterId,
          customer_id: ghost.customerId,
          error_code: "resource_missing",
          from: hoursAgo(3),
          to: hoursAgo(2)
        })
        expect(one.status).toBe(200)
        expect(one.as(BatchRetryResult).requeued).toBe(1)
        const rest = yield* retry({})
        expect(rest.as(BatchRetryResult).requeued).toBe(1)
        const requeued = (yield* batches).filter((b) => b.customerId === ghost.customerId)
        expect(requeued.map((b) => [b.syncStatus, b.retryCount])).toEqual([
          ["pending", 0],
          ["pending", 0]
        ])
        expect(requeued.map((b) => b.identifier).sort()).toEqual(failedBefore.map((b) => b.identifier).sort())

        const [audit, auditResponse] = yield* api.admin.listAuditLog({ urlParams: { action: "sync.batches_retry" }, withResponse: true })
        expect(auditResponse.status).toBe(200)
        expect(audit.entries.map((e) => e.details)).toMatchObject([
          { requeued: 1 },
          { requeued: 1, filter: { customer_id: ghost.customerId, error_code: "resource_missing" } }
        ])

        yield* sync()
        yield* sync()
        expect(yield* stripeTotal(stripeId, m.stripeEventName)).toBe(O.format(O.sum(["2.5", "0.125"])))
        expect(yield* stripeTotal(good.stripeId, m.stripeEventName)).toBe(O.format(O.sum(["1.25"])))
        expect((yield* retry({})).as(BatchRetryResult).requeued).toBe(0)
      })
    )

    it.effect("reads and deletes a customer's Stripe mapping, tenant-isolated, audited", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const { other, m, good } = yield* Setup
        const path = { customer_id: good.customerId }
        const [read, readResponse] = yield* api.admin.getCustomerMapping({ path, withResponse: true })
        expect(readResponse.status).toBe(200)
        expect(read).toMatchObject({ customer_id: good.customerId, provider: "stripe", provider_customer_id: good.stripeId, status: "active" })
        const missing = yield* apiError(api.admin.getCustomerMapping({ path: { customer_id: "cust_nope" } }))
        expect(coded(missing)).toEqual(["NotFound", "customer_mapping_not_found"])
        // tenant B can neither read nor delete A's mapping
        const foreignRead = yield* apiError(other.client.admin.getCustomerMapping({ path }))
        expect(coded(foreignRead)).toEqual(["NotFound", "customer_mapping_not_found"])
        const foreignDelete = yield* apiError(other.client.admin.deleteCustomerMapping({ path }))
        expect(coded(foreignDelete)).toEqual(["NotFound", "customer_mapping_not_found"])
        expect((yield* api.admin.getCustomerMapping({ path })).status).toBe("active")

        const [del, delResponse] = yield* api.admin.deleteCustomerMapping({ path, withResponse: true })
        expect(delResponse.status).toBe(200)
        expect(del).toMatchObject({ customer_id: good.customerId, status: "deleted" })
        const again = yield* apiError(api.admin.deleteCustomerMapping({ path }))
        expect(coded(again)).toEqual(["NotFound", "customer_mapping_not_found"])
        // later usage of the customer is held, not sent
        yield* ingest([{ event_id: "g2", event_name: "tokens", external_customer_id: "good", timestamp: hoursAgo(2, 9), properties: { t: "4" } }])
        yield* sync()
        expect(yield* stripeTotal(good.stripeId, m.stripeEventName)).toBe(O.format(O.sum(["1.25"])))
        const log = yield* api.admin.listAuditLog({ urlParams: { action: "customer_mapping.delete" } })
        expect(log.entries.map((e) => e.target)).toEqual([`customer:${good.customerId}`])
      })
    )

    it.effect("reads the audit log by action and time, paged with a cursor, tenant-isolated", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const { other } = yield* Setup
        const [all, allResponse] = yield* api.admin.listAuditLog({ urlParams: { limit: 1000 }, withResponse: true })
        expect(allResponse.status).toBe(200)
        const ids = all.entries.map((e) => e.id)
        expect(ids.length).toBeGreaterThanOrEqual(4)
        // pages of 1 walk the same rows in the same order
        const walked: Array<string> = []
        let cursor: typeof all.next_cursor = null
        do {
          const page: typeof all = yield* api.admin.listAuditLog({ urlParams: { limit: 1, ...(cursor === null ? {} : { cursor }) } })
          walked.push(...page.entries.map((e) => e.id))
          cursor = page.next_cursor
        } while (cursor !== null)
        expect(walked).toEqual(ids)
        // a time range: none before the first entry, all from it on
        const oldest = all.entries[all.entries.length - 1]!.created_at
        const before = yield* api.admin.listAuditLog({ urlParams: { to: instant(oldest) } })
        expect(before.entries).toEqual([])
        const since = yield* api.admin.listAuditLog({ urlParams: { limit: 1000, from: instant(oldest) } })
        expect(since.entries.length).toBe(ids.length)
        // bad filters (the typed client would not send them)
        const badFrom = yield* raw("GET", "/v1/audit-log?from=last-week")
        expect([badFrom.status, badFrom.error?.code]).toEqual([400, "invalid_parameter"])
        const badCursor = yield* raw("GET", "/v1/audit-log?cursor=nonsense")
        expect([badCursor.status, badCursor.error?.code]).toEqual([400, "invalid_cursor"])
        const badLimit = yield* raw("GET", "/v1/audit-log?limit=0")
        expect([badLimit.status, badLimit.error?.code]).toEqual([400, "invalid_request"])
        // another tenant sees none of these rows
        const [foreign, foreignResponse] = yield* other.client.admin.listAuditLog({ urlParams: { limit: 1000 }, withResponse: true })
        expect(foreignResponse.status).toBe(200)
        expect(foreign.entries.filter((e) => ids.includes(e.id))).toEqual([])
        // never a secret (in the body as sent)
        expect((yield* raw("GET", "/v1/audit-log?limit=1000")).text).not.toContain(STRIPE_KEY)
      })
    )

    it.effect("DELETE /v1/stripe/config disconnects: sync stops, the ledger stays, audited; a reconnect keeps the ledger's windows", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const emulator = yield* SyncEmulator
        const { other } = yield* Setup
        const foreign = yield* apiError(other.client.admin.deleteConfig())
        expect(coded(foreign)).toEqual(["NotFound", "stripe_not_configured"])
        const batchesBefore = (yield* api.sync.batches({ urlParams: { limit: 1000 } })).batches.length
        expect(batchesBefore).toBeGreaterThan(0)

        const [del, delResponse] = yield* api.admin.deleteConfig({ withResponse: true })
        expect(delResponse.status).toBe(200)
        expect(del).toMatchObject({ disconnected: true, stripe_account_id: emulator.accountId })
        expect(del.unsynced_batches).toBe(0)
        expect((yield* apiError(api.stripeConfig.getConfig()))._tag).toBe("NotFound")
        const status = yield* api.sync.status()
        expect(status).toMatchObject({ configured: false, sync_enabled: false })
        const manual = yield* apiError(api.sync.manual({ payload: { window_start: instant(hoursAgo(3)), window_end: instant(hoursAgo(2)), dry_run: false } }))
        expect(coded(manual)).toEqual(["InvalidInput", "stripe_not_configured"])
        expect((yield* api.sync.batches({ urlParams: { limit: 1000 } })).batches.length).toBe(batchesBefore)
        const again = yield* apiError(api.admin.deleteConfig())
        expect(coded(again)).toEqual(["NotFound", "stripe_not_configured"])
        const log = yield* api.admin.listAuditLog({ urlParams: { action: "config.delete" } })
        expect(log.entries).toHaveLength(1)
        expect(JSON.stringify(log.entries)).not.toContain(STRIPE_KEY)

        // reconnecting with another window size: the ledger's hours keep their bounds
        const [, put] = yield* api.stripeConfig.putConfig({ payload: { api_key: Redacted.make(STRIPE_KEY), aggregation_window_minutes: 15 }, withResponse: true })
        expect(put.status).toBe(200)
        const created = yield* api.admin.listAuditLog({ urlParams: { action: "config.create" } })
        const effectiveFrom = (created.entries[0]?.details as { aggregation_window_effective_from?: unknown } | undefined)?.aggregation_window_effective_from
        expect(typeof effectiveFrom).toBe("string")
        const since = new Date(effectiveFrom as string).getTime()
        const ledgerEnd = Math.max(...(yield* batches).map((b) => b.windowEnd.getTime()))
        expect(since).toBeGreaterThanOrEqual(ledgerEnd)
      })
    )
  })
)

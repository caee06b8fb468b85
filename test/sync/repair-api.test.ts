/**
 * Repairs and records over HTTP (issue #12 item 9, issue #18 item 6):
 * - POST /v1/stripe/sync/batches/retry re-queues failed batches after a fix, audited, with the
 *   same identifier (a resend cannot bill twice);
 * - GET/DELETE /v1/customers/{id}/stripe-mapping, GET /v1/audit-log (filters, cursor), DELETE
 *   /v1/stripe/config (disconnect keeps the ledger), each tenant-isolated, with stable codes.
 * Expected totals come from the raw events (test/support/oracle.ts).
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CustomerMappingRepo } from "../../src/repositories/CustomerMappingRepo.js"
import { forEachBackend } from "../support/app.js"
import * as O from "../support/oracle.js"
import { hoursAgo, type MeterSetup, STRIPE_KEY, startSyncHarness, type SyncHarness } from "./support.js"

/** FLEXPRICE_SYNC_MAX_RETRIES default. */
const RETRY_CAP = 5

forEachBackend(["pglite", "postgres"], (backend) => {
  describe(`repair and record endpoints on ${backend}`, () => {
    let h: SyncHarness
    let other: { apiKey: string }
    let m: MeterSetup
    let good: { customerId: string; stripeId: string | null }
    let ghost: { customerId: string; stripeId: string | null }

    beforeAll(async () => {
      h = await startSyncHarness({ backend })
      await h.configure({ transport: "v1" })
      other = await h.app.newTenant("other")
      m = await h.meter("tokens", { aggregation: "SUM", field: "t" })
      good = await h.customer("good")
      // mapped to a Stripe customer that does not exist: Stripe refuses each of its events
      ghost = await h.customer("ghost", false)
      await h.asTenant(
        Effect.flatMap(CustomerMappingRepo, (r) => r.insert({ customerId: ghost.customerId, providerCustomerId: "cus_DoesNotExist000", source: "api" }))
      )
      await h.ingest([
        { event_id: "g1", event_name: "tokens", external_customer_id: "good", timestamp: hoursAgo(3, 5), properties: { t: "1.25" } },
        { event_id: "x1", event_name: "tokens", external_customer_id: "ghost", timestamp: hoursAgo(3, 6), properties: { t: "2.5" } },
        { event_id: "x2", event_name: "tokens", external_customer_id: "ghost", timestamp: hoursAgo(2, 6), properties: { t: "0.125" } }
      ])
      for (let i = 0; i < RETRY_CAP + 1; i++) await h.sync()
    })
    afterAll(async () => {
      await h?.dispose()
    })

    it("re-queues failed batches after a fix: audited, same identifiers, Stripe gets each unit once", async () => {
      const failedBefore = (await h.batches()).filter((b) => b.syncStatus === "failed")
      expect(failedBefore.map((b) => [b.customerId, b.retryCount, b.errorCode])).toEqual([
        [ghost.customerId, RETRY_CAP, "resource_missing"],
        [ghost.customerId, RETRY_CAP, "resource_missing"]
      ])
      // bad filters: stable codes
      const badStatus = await h.app.request("POST", "/v1/stripe/sync/batches/retry", { status: "synced" })
      expect([badStatus.status, badStatus.error.code]).toEqual([400, "invalid_request"])
      const badDate = await h.app.request("POST", "/v1/stripe/sync/batches/retry", { from: "yesterday" })
      expect([badDate.status, badDate.error.code]).toEqual([400, "invalid_parameter"])
      const badRange = await h.app.request("POST", "/v1/stripe/sync/batches/retry", { from: hoursAgo(1), to: hoursAgo(2) })
      expect([badRange.status, badRange.error.code]).toEqual([400, "invalid_range"])

      // the fix: the customer is mapped to its real Stripe customer
      const stripeId = await Effect.runPromise(h.emulator.createCustomer({}).pipe(Effect.map((c) => c.id)))
      await h.asTenant(
        Effect.gen(function* () {
          const repo = yield* CustomerMappingRepo
          const row = yield* repo.findByCustomerId(ghost.customerId)
          if (row._tag === "None") return yield* Effect.die("no mapping")
          yield* repo.reassign(row.value.id, { customerId: ghost.customerId, providerCustomerId: stripeId, source: "api" })
        })
      )
      // capped: a run does not retry them
      await h.sync()
      expect((await h.batches()).filter((b) => b.syncStatus === "failed").length).toBe(2)

      // another tenant's call re-queues none of them
      const foreign = await h.app.request("POST", "/v1/stripe/sync/batches/retry", {}, { apiKey: other.apiKey })
      expect(foreign.status).toBe(200)
      expect(foreign.data.requeued).toBe(0)

      const dry = await h.app.request("POST", "/v1/stripe/sync/batches/retry", { error_code: "resource_missing", dry_run: true })
      expect(dry.body).toMatchObject({ requeued: 2, dry_run: true })
      expect((await h.batches()).filter((b) => b.syncStatus === "failed").length).toBe(2)

      // a filter that matches one window only
      const one = await h.app.request("POST", "/v1/stripe/sync/batches/retry", {
        status: "failed",
        meter_id: m.meterId,
        customer_id: ghost.customerId,
        error_code: "resource_missing",
        from: hoursAgo(3),
        to: hoursAgo(2)
      })
      expect(one.status).toBe(200)
      expect(one.data.requeued).toBe(1)
      const rest = await h.app.request("POST", "/v1/stripe/sync/batches/retry", {})
      expect(rest.data.requeued).toBe(1)
      const requeued = (await h.batches()).filter((b) => b.customerId === ghost.customerId)
      expect(requeued.map((b) => [b.syncStatus, b.retryCount])).toEqual([
        ["pending", 0],
        ["pending", 0]
      ])
      expect(requeued.map((b) => b.identifier).sort()).toEqual(failedBefore.map((b) => b.identifier).sort())

      const audit = await h.app.request("GET", "/v1/audit-log?action=sync.batches_retry")
      expect(audit.status).toBe(200)
      expect(audit.data.entries.map((e) => e.details)).toMatchObject([
        { requeued: 1 },
        { requeued: 1, filter: { customer_id: ghost.customerId, error_code: "resource_missing" } }
      ])

      await h.sync()
      await h.sync()
      expect(h.stripeTotal(stripeId, m.stripeEventName)).toBe(O.format(O.sum(["2.5", "0.125"])))
      expect(h.stripeTotal(good.stripeId!, m.stripeEventName)).toBe(O.format(O.sum(["1.25"])))
      expect((await h.app.request("POST", "/v1/stripe/sync/batches/retry", {})).data.requeued).toBe(0)
    })

    it("reads and deletes a customer's Stripe mapping, tenant-isolated, audited", async () => {
      const read = await h.app.request("GET", `/v1/customers/${good.customerId}/stripe-mapping`)
      expect(read.status).toBe(200)
      expect(read.body).toMatchObject({ customer_id: good.customerId, provider: "stripe", provider_customer_id: good.stripeId, status: "active" })
      const missing = await h.app.request("GET", "/v1/customers/cust_nope/stripe-mapping")
      expect([missing.status, missing.error.code]).toEqual([404, "customer_mapping_not_found"])
      // tenant B can neither read nor delete A's mapping
      const foreignRead = await h.app.request("GET", `/v1/customers/${good.customerId}/stripe-mapping`, undefined, { apiKey: other.apiKey })
      expect([foreignRead.status, foreignRead.error.code]).toEqual([404, "customer_mapping_not_found"])
      const foreignDelete = await h.app.request("DELETE", `/v1/customers/${good.customerId}/stripe-mapping`, undefined, { apiKey: other.apiKey })
      expect([foreignDelete.status, foreignDelete.error.code]).toEqual([404, "customer_mapping_not_found"])
      expect((await h.app.request("GET", `/v1/customers/${good.customerId}/stripe-mapping`)).data.status).toBe("active")

      const del = await h.app.request("DELETE", `/v1/customers/${good.customerId}/stripe-mapping`)
      expect(del.status).toBe(200)
      expect(del.body).toMatchObject({ customer_id: good.customerId, status: "deleted" })
      const again = await h.app.request("DELETE", `/v1/customers/${good.customerId}/stripe-mapping`)
      expect([again.status, again.error.code]).toEqual([404, "customer_mapping_not_found"])
      // later usage of the customer is held, not sent
      await h.ingest([{ event_id: "g2", event_name: "tokens", external_customer_id: "good", timestamp: hoursAgo(2, 9), properties: { t: "4" } }])
      await h.sync()
      expect(h.stripeTotal(good.stripeId!, m.stripeEventName)).toBe(O.format(O.sum(["1.25"])))
      const log = await h.app.request("GET", "/v1/audit-log?action=customer_mapping.delete")
      expect(log.data.entries.map((e) => e.target)).toEqual([`customer:${good.customerId}`])
    })

    it("reads the audit log by action and time, paged with a cursor, tenant-isolated", async () => {
      const all = await h.app.request("GET", "/v1/audit-log?limit=1000")
      expect(all.status).toBe(200)
      const ids: Array<string> = all.data.entries.map((e) => e.id)
      expect(ids.length).toBeGreaterThanOrEqual(4)
      // pages of 1 walk the same rows in the same order
      const walked: Array<string> = []
      let cursor: string | null = null
      do {
        const page: { data: { entries: ReadonlyArray<{ id: string }>; next_cursor: string | null } } = await h.app.request(
          "GET",
          `/v1/audit-log?limit=1${cursor ? `&cursor=${cursor}` : ""}` as const
        )
        walked.push(...page.data.entries.map((e) => e.id))
        cursor = page.data.next_cursor
      } while (cursor !== null)
      expect(walked).toEqual(ids)
      // a time range: none before the first entry, all from it on
      const oldest = all.data.entries[all.data.entries.length - 1].created_at as string
      const before = await h.app.request("GET", `/v1/audit-log?to=${encodeURIComponent(oldest)}`)
      expect(before.data.entries).toEqual([])
      const since = await h.app.request("GET", `/v1/audit-log?limit=1000&from=${encodeURIComponent(oldest)}`)
      expect(since.data.entries.length).toBe(ids.length)
      // bad filters
      const badFrom = await h.app.request("GET", "/v1/audit-log?from=last-week")
      expect([badFrom.status, badFrom.error.code]).toEqual([400, "invalid_parameter"])
      const badCursor = await h.app.request("GET", "/v1/audit-log?cursor=nonsense")
      expect([badCursor.status, badCursor.error.code]).toEqual([400, "invalid_cursor"])
      const badLimit = await h.app.request("GET", "/v1/audit-log?limit=0")
      expect([badLimit.status, badLimit.error.code]).toEqual([400, "invalid_request"])
      // another tenant sees none of these rows
      const foreign = await h.app.request("GET", "/v1/audit-log?limit=1000", undefined, { apiKey: other.apiKey })
      expect(foreign.status).toBe(200)
      expect(foreign.data.entries.filter((e: { id: string }) => ids.includes(e.id))).toEqual([])
      // never a secret
      expect(all.text).not.toContain(STRIPE_KEY)
    })

    it("DELETE /v1/stripe/config disconnects: sync stops, the ledger stays, audited; a reconnect keeps the ledger's windows", async () => {
      const foreign = await h.app.request("DELETE", "/v1/stripe/config", undefined, { apiKey: other.apiKey })
      expect([foreign.status, foreign.error.code]).toEqual([404, "stripe_not_configured"])
      const batchesBefore = (await h.app.request("GET", "/v1/stripe/sync/batches?limit=1000")).data.batches.length
      expect(batchesBefore).toBeGreaterThan(0)

      const del = await h.app.request("DELETE", "/v1/stripe/config")
      expect(del.status).toBe(200)
      expect(del.body).toMatchObject({ disconnected: true, stripe_account_id: h.emulator.accountId })
      expect(del.data.unsynced_batches).toBe(0)
      expect((await h.app.request("GET", "/v1/stripe/config")).status).toBe(404)
      const status = await h.app.request("GET", "/v1/stripe/sync/status")
      expect(status.body).toMatchObject({ configured: false, sync_enabled: false })
      const manual = await h.app.request("POST", "/v1/stripe/sync/manual", { window_start: hoursAgo(3), window_end: hoursAgo(2) })
      expect([manual.status, manual.error.code]).toEqual([400, "stripe_not_configured"])
      expect((await h.app.request("GET", "/v1/stripe/sync/batches?limit=1000")).data.batches.length).toBe(batchesBefore)
      const again = await h.app.request("DELETE", "/v1/stripe/config")
      expect([again.status, again.error.code]).toEqual([404, "stripe_not_configured"])
      const log = await h.app.request("GET", "/v1/audit-log?action=config.delete")
      expect(log.data.entries).toHaveLength(1)
      expect(JSON.stringify(log.data.entries)).not.toContain(STRIPE_KEY)

      // reconnecting with another window size: the ledger's hours keep their bounds
      const put = await h.app.request("PUT", "/v1/stripe/config", { api_key: STRIPE_KEY, aggregation_window_minutes: 15 })
      expect(put.status).toBe(200)
      const created = await h.app.request("GET", "/v1/audit-log?action=config.create")
      const effectiveFrom = (created.data.entries[0]?.details as { aggregation_window_effective_from?: unknown } | undefined)?.aggregation_window_effective_from
      expect(typeof effectiveFrom).toBe("string")
      const since = new Date(effectiveFrom as string).getTime()
      const ledgerEnd = Math.max(...(await h.batches()).map((b) => b.windowEnd.getTime()))
      expect(since).toBeGreaterThanOrEqual(ledgerEnd)
    })
  })
})

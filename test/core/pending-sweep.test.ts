/**
 * The pending sweep: an event left pending next to a customer that exists (the customer was
 * created in a transaction that committed after both the ingest's re-check and the
 * customer's own pending pass) is processed by the next sweep.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import { sweepOnce } from "../../src/events/PendingSweeper.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, TestTenant } from "../support/TestApp.js"

layer(TestApp.layer(), { excludeTestServices: true })("pending sweep", (it) => {
  it.effect("processes pending events whose customer exists, once", () =>
    Effect.gen(function* () {
      const api = yield* ApiClient
      yield* api.meters.create({ payload: { name: "sw", event_name: "sweep", aggregation: { type: "SUM", field: "n" } } })
      const ts = new Date(Date.now() - 2 * 3600_000).toISOString()
      const [, res] = yield* api.events.ingest({
        payload: { event_id: "sw-1", event_name: "sweep", external_customer_id: "sw-c", timestamp: ts, properties: { n: "4.5" } },
        withResponse: true
      })
      expect(res.status).toBe(202)
      // simulate the race: the customer row appears without its pending pass having run
      const { tenantId: t, environmentId: e } = (yield* TestTenant).scope
      const sql = yield* PgClient.PgClient
      yield* sql`INSERT INTO customers (id, tenant_id, environment_id, external_id) VALUES ('cust_sweep1', ${t}, ${e}, 'sw-c')`
      const before = yield* api.events.list({ urlParams: { external_customer_id: "sw-c" } })
      expect(before.events[0]?.status).toBe("pending")
      expect(yield* sweepOnce()).toBe(1)
      const after = yield* api.events.list({ urlParams: { external_customer_id: "sw-c" } })
      expect(after.events[0]).toMatchObject({ status: "processed", customer_id: "cust_sweep1" })
      expect(yield* sweepOnce()).toBe(0)
    })
  )
})

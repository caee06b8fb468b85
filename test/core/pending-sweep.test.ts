/**
 * The pending sweep: an event left pending next to a customer that exists (the customer was
 * created in a transaction that committed after both the ingest's re-check and the
 * customer's own pending pass) is processed by the next sweep.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { sweepOnce } from "../../src/events/PendingSweeper.js"
import { startTestApp, type TestApp } from "../support/app.js"

describe("pending sweep", () => {
  let app: TestApp
  beforeAll(async () => {
    app = await startTestApp()
  })
  afterAll(() => app?.dispose())

  it("processes pending events whose customer exists, once", async () => {
    await app.request("POST", "/v1/meters", { name: "sw", event_name: "sweep", aggregation: { type: "SUM", field: "n" } })
    const ts = new Date(Date.now() - 2 * 3600_000).toISOString()
    const res = await app.request("POST", "/v1/events", { event_id: "sw-1", event_name: "sweep", external_customer_id: "sw-c", timestamp: ts, properties: { n: "4.5" } })
    expect(res.status).toBe(202)
    // simulate the race: the customer row appears without its pending pass having run
    const { tenantId: t, environmentId: e } = app.scope
    await app.run(
      Effect.flatMap(PgClient.PgClient, (sql) =>
        sql`INSERT INTO customers (id, tenant_id, environment_id, external_id) VALUES ('cust_sweep1', ${t}, ${e}, 'sw-c')`
      )
    )
    const before = await app.request("GET", "/v1/events?external_customer_id=sw-c")
    expect(before.data.events[0].status).toBe("pending")
    expect(await app.run(sweepOnce())).toBe(1)
    const after = await app.request("GET", "/v1/events?external_customer_id=sw-c")
    expect(after.data.events[0]).toMatchObject({ status: "processed", customer_id: "cust_sweep1" })
    expect(await app.run(sweepOnce())).toBe(0)
  })
})

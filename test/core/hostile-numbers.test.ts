/**
 * Hostile number literals over HTTP: a literal beyond the bounds (digits, exponent) or a
 * quantity the numeric(38,12) column cannot hold is refused per event with a stable code and
 * nothing is stored; exact literals inside the bounds are accepted exactly. The pending sweep and
 * `POST /v1/customers` never expand such a literal, even one already stored.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { sweepOnce } from "../../src/events/PendingSweeper.js"
import { forEachBackend, startTestApp, type Backend, type TestApp } from "../support/app.js"

const ts = () => new Date(Date.now() - 2 * 3600_000).toISOString()

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`hostile number literals on ${backend}`, () => {
    let app: TestApp
    const stored = async (externalCustomerId: string) =>
      (await app.request("GET", `/v1/events?external_customer_id=${externalCustomerId}`)).data.events
    const processedQty = (eventId: string) =>
      app.run(
        Effect.flatMap(PgClient.PgClient, (sql) =>
          sql<{ q: string }>`SELECT qty_total::text AS q FROM events_processed WHERE tenant_id = ${app.scope.tenantId} AND event_id = ${eventId}`
        )
      )
    beforeAll(async () => {
      app = await startTestApp({ backend })
      await app.request("POST", "/v1/meters", { name: "tok", event_name: "hostile", aggregation: { type: "SUM", field: "tokens" } })
      await app.request("POST", "/v1/customers", { external_id: "hn-c" })
    })
    afterAll(() => app?.dispose())

    const single = (id: string, customer: string, tokens: string) =>
      `{"event_id":"${id}","event_name":"hostile","external_customer_id":"${customer}","timestamp":"${ts()}","properties":{"tokens":${tokens}}}`

    it("refuses 1e-60000, 1e999999999 and 65 digits per event with number_out_of_range, storing nothing", async () => {
      for (const [i, lit] of ["1e-60000", "1e999999999", "1".repeat(65), "0.5E+65"].entries()) {
        for (const customer of ["hn-c", "hn-unknown"]) {
          const res = await app.request("POST", "/v1/events", undefined, { rawBody: single(`hn-${i}-${customer}`, customer, lit) })
          expect(res.status, lit).toBe(400)
          expect(res.error.code).toBe("number_out_of_range")
          expect(res.error.message).toContain("properties.tokens")
        }
      }
      // nested anywhere in the properties too, not only the metered field
      const nested = await app.request("POST", "/v1/events", undefined, {
        rawBody: `{"event_id":"hn-nested","event_name":"other","external_customer_id":"hn-c","properties":{"a":[1,{"b":-1e-999}]}}`
      })
      expect(nested.status).toBe(400)
      expect(nested.error.message).toContain("properties.a[1].b")
      expect(await stored("hn-c")).toEqual([])
      expect(await stored("hn-unknown")).toEqual([])
    })

    it("refuses a quantity the column cannot hold (known or unknown customer) with quantity_out_of_range", async () => {
      // 27 integer digits, 13 fractional digits, and a string quantity with a hostile exponent
      for (const [i, lit] of ["1e26", "0.0000000000001", '"1e-60000"', '"1e999999999"'].entries()) {
        for (const customer of ["hn-c", "hn-unknown2"]) {
          const res = await app.request("POST", "/v1/events", undefined, { rawBody: single(`hq-${i}-${customer}`, customer, lit) })
          expect(res.status, lit).toBe(400)
          expect(res.error.code).toBe("quantity_out_of_range")
        }
      }
      expect(await stored("hn-unknown2")).toEqual([])
    })

    it("accepts the largest exact quantities and -0 exactly", async () => {
      const big = "9".repeat(26) + "." + "9".repeat(12)
      const cases: Array<[string, string]> = [
        [big, big],
        ["1.5e-3", "0.0015"],
        ["-0", "0"],
        ["123456789012345E-12", "123.456789012345"],
        ["1e25", "1" + "0".repeat(25)]
      ]
      for (const [i, [lit, expected]] of cases.entries()) {
        const res = await app.request("POST", "/v1/events", undefined, { rawBody: single(`ok-${i}`, "hn-c", lit) })
        expect(res.status, lit).toBe(202)
        const [row] = await processedQty(`ok-${i}`)
        // numeric(38,12) prints 12 fractional digits: compare as exact decimals via BigInt
        const [ip, fp = ""] = row!.q.split(".")
        const [eip, efp = ""] = expected.split(".")
        expect(BigInt(ip! + fp.padEnd(12, "0"))).toBe(BigInt(eip! + efp.padEnd(12, "0")))
      }
    })

    it("rejects only the hostile events of a bulk, by index", async () => {
      const events = [single("bk-0", "hn-bulk", "1"), single("bk-1", "hn-bulk", "1e-2000"), single("bk-2", "hn-bulk", "2"), single("bk-3", "hn-bulk", "1e27")]
      const res = await app.request("POST", "/v1/events/bulk", undefined, { rawBody: `{"events":[${events.join(",")}]}` })
      expect(res.status).toBe(202)
      expect(res.data.accepted).toBe(2)
      expect(res.data.rejected.map((r) => [r.index, r.code])).toEqual([
        [1, "number_out_of_range"],
        [3, "quantity_out_of_range"]
      ])
    })

    it("never expands a hostile literal already pending: the customer is created and the sweep runs", async () => {
      // a string quantity for a meter that does not exist yet is stored as pending
      const res = await app.request("POST", "/v1/events", undefined, {
        rawBody: `{"event_id":"late-1","event_name":"late","external_customer_id":"hn-late","timestamp":"${ts()}","properties":{"n":"1e-60000"}}`
      })
      expect(res.status).toBe(202)
      // and a literal stored before the bound existed
      await app.run(
        Effect.flatMap(PgClient.PgClient, (sql) =>
          sql`INSERT INTO pending_events (tenant_id, environment_id, event_id, external_customer_id, event_name, "timestamp", ingested_at, properties)
            VALUES (${app.scope.tenantId}, ${app.scope.environmentId}, 'late-legacy', 'hn-late', 'late', now(), now(), '{"n": 1e999999999}')`
        )
      )
      await app.request("POST", "/v1/meters", { name: "late", event_name: "late", aggregation: { type: "SUM", field: "n" } })
      const created = await app.request("POST", "/v1/customers", { external_id: "hn-late" })
      expect(created.status).toBe(201)
      expect(await app.run(sweepOnce())).toBe(0)
      const listed = await app.request("GET", "/v1/events?external_customer_id=hn-late")
      expect(listed.status).toBe(200)
      expect(listed.data.events.find((e) => e.event_id === "late-1")).toMatchObject({ status: "error", error: expect.stringContaining("out of range") })
      const health = await app.request("GET", "/healthz")
      expect(health.status).toBe(200)
    })
  })
})

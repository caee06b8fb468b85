/**
 * Hostile number literals over HTTP: a literal beyond the bounds (digits, exponent) or a
 * quantity the numeric(38,12) column cannot hold is refused per event with a stable code and
 * nothing is stored; exact literals inside the bounds are accepted exactly. The pending sweep and
 * `POST /v1/customers` never expand such a literal, even one already stored.
 */
import { PgClient } from "@effect/sql-pg"
import { layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { IngestResult } from "../../src/domain/Models.js"
import { sweepOnce } from "../../src/events/PendingSweeper.js"
import { forEachBackend } from "../support/app.js"
import * as TestApp from "../support/TestApp.js"
import { ApiClient, raw, TestTenant } from "../support/TestApp.js"

const ts = () => new Date(Date.now() - 2 * 3600_000).toISOString()

/** The meter and customer every test sends to, made before the first test. */
const prepared = Layer.effectDiscard(
  Effect.gen(function* () {
    const api = yield* ApiClient
    yield* api.meters.create({ payload: { name: "tok", event_name: "hostile", aggregation: { type: "SUM", field: "tokens" } } })
    yield* api.customers.create({ payload: { external_id: "hn-c" } })
  })
)

const stored = (externalCustomerId: string) =>
  Effect.flatMap(ApiClient, (api) => Effect.map(api.events.list({ urlParams: { external_customer_id: externalCustomerId } }), (l) => l.events))

const processedQty = (eventId: string) =>
  Effect.gen(function* () {
    const { scope } = yield* TestTenant
    const sql = yield* PgClient.PgClient
    return yield* sql<{ q: string }>`SELECT qty_total::text AS q FROM events_processed WHERE tenant_id = ${scope.tenantId} AND event_id = ${eventId}`
  })

/** Number literals are sent raw: as JSON text, a hostile literal never passes through a JS number. */
const postEvent = (body: string) => raw("POST", "/v1/events", { body })

const single = (id: string, customer: string, tokens: string) =>
  `{"event_id":"${id}","event_name":"hostile","external_customer_id":"${customer}","timestamp":"${ts()}","properties":{"tokens":${tokens}}}`

forEachBackend(["pglite", "postgres"], (backend) => {
  layer(prepared.pipe(Layer.provideMerge(TestApp.layer({ backend }))), { excludeTestServices: true })(`hostile number literals on ${backend}`, (it) => {
    it.effect("refuses 1e-60000, 1e999999999 and 65 digits per event with number_out_of_range, storing nothing", () =>
      Effect.gen(function* () {
        for (const [i, lit] of ["1e-60000", "1e999999999", "1".repeat(65), "0.5E+65"].entries()) {
          for (const customer of ["hn-c", "hn-unknown"]) {
            const res = yield* postEvent(single(`hn-${i}-${customer}`, customer, lit))
            expect(res.status, lit).toBe(400)
            expect(res.error?.code).toBe("number_out_of_range")
            expect(res.error?.message).toContain("properties.tokens")
          }
        }
        // nested anywhere in the properties too, not only the metered field
        const nested = yield* postEvent(`{"event_id":"hn-nested","event_name":"other","external_customer_id":"hn-c","properties":{"a":[1,{"b":-1e-999}]}}`)
        expect(nested.status).toBe(400)
        expect(nested.error?.message).toContain("properties.a[1].b")
        expect(yield* stored("hn-c")).toEqual([])
        expect(yield* stored("hn-unknown")).toEqual([])
      })
    )

    it.effect("refuses a quantity the column cannot hold (known or unknown customer) with quantity_out_of_range", () =>
      Effect.gen(function* () {
        // 27 integer digits, 13 fractional digits, and a string quantity with a hostile exponent
        for (const [i, lit] of ["1e26", "0.0000000000001", '"1e-60000"', '"1e999999999"'].entries()) {
          for (const customer of ["hn-c", "hn-unknown2"]) {
            const res = yield* postEvent(single(`hq-${i}-${customer}`, customer, lit))
            expect(res.status, lit).toBe(400)
            expect(res.error?.code).toBe("quantity_out_of_range")
          }
        }
        expect(yield* stored("hn-unknown2")).toEqual([])
      })
    )

    it.effect("accepts the largest exact quantities and -0 exactly", () =>
      Effect.gen(function* () {
        const big = "9".repeat(26) + "." + "9".repeat(12)
        const cases: Array<[string, string]> = [
          [big, big],
          ["1.5e-3", "0.0015"],
          ["-0", "0"],
          ["123456789012345E-12", "123.456789012345"],
          ["1e25", "1" + "0".repeat(25)]
        ]
        for (const [i, [lit, expected]] of cases.entries()) {
          const res = yield* postEvent(single(`ok-${i}`, "hn-c", lit))
          expect(res.status, lit).toBe(202)
          const rows = yield* processedQty(`ok-${i}`)
          expect(rows, lit).toHaveLength(1)
          // numeric(38,12) prints 12 fractional digits: compare as exact decimals via BigInt
          const [ip = "", fp = ""] = (rows[0]?.q ?? "").split(".")
          const [eip = "", efp = ""] = expected.split(".")
          expect(BigInt(ip + fp.padEnd(12, "0"))).toBe(BigInt(eip + efp.padEnd(12, "0")))
        }
      })
    )

    it.effect("rejects only the hostile events of a bulk, by index", () =>
      Effect.gen(function* () {
        const events = [single("bk-0", "hn-bulk", "1"), single("bk-1", "hn-bulk", "1e-2000"), single("bk-2", "hn-bulk", "2"), single("bk-3", "hn-bulk", "1e27")]
        const res = yield* raw("POST", "/v1/events/bulk", { body: `{"events":[${events.join(",")}]}` })
        expect(res.status).toBe(202)
        const result = res.as(IngestResult)
        expect(result.accepted).toBe(2)
        expect(result.rejected.map((r) => [r.index, r.code])).toEqual([
          [1, "number_out_of_range"],
          [3, "quantity_out_of_range"]
        ])
      })
    )

    it.effect("never expands a hostile literal already pending: the customer is created and the sweep runs", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const { scope } = yield* TestTenant
        // a string quantity for a meter that does not exist yet is stored as pending
        const res = yield* postEvent(`{"event_id":"late-1","event_name":"late","external_customer_id":"hn-late","timestamp":"${ts()}","properties":{"n":"1e-60000"}}`)
        expect(res.status).toBe(202)
        // and a literal stored before the bound existed
        const sql = yield* PgClient.PgClient
        yield* sql`INSERT INTO pending_events (tenant_id, environment_id, event_id, external_customer_id, event_name, "timestamp", ingested_at, properties)
          VALUES (${scope.tenantId}, ${scope.environmentId}, 'late-legacy', 'hn-late', 'late', now(), now(), '{"n": 1e999999999}')`
        yield* api.meters.create({ payload: { name: "late", event_name: "late", aggregation: { type: "SUM", field: "n" } } })
        const [, created] = yield* api.customers.create({ payload: { external_id: "hn-late" }, withResponse: true })
        expect(created.status).toBe(201)
        expect(yield* sweepOnce()).toBe(0)
        const listed = yield* api.events.list({ urlParams: { external_customer_id: "hn-late" } })
        expect(listed.events.find((e) => e.event_id === "late-1")).toMatchObject({ status: "error", error: expect.stringContaining("out of range") })
        const [, health] = yield* api.health.healthz({ withResponse: true })
        expect(health.status).toBe(200)
      })
    )
  })
})

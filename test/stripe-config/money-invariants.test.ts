/**
 * Configuration refusals of issue #12 over HTTP, on PGlite and PostgreSQL: a setting that would
 * make the sync bill wrong is refused with a 4xx and a stable code, and nothing is stored.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { forEachBackend, type Backend } from "../support/app.js"
import { configure, startHarness, type Harness } from "../webhooks/support.js"

forEachBackend(["pglite", "postgres"], (backend: Backend) => {
  describe(`money-safe configuration on ${backend}`, () => {
    let h: Harness

    beforeAll(async () => {
      h = await startHarness(backend)
      await configure(h)
    })
    afterAll(async () => {
      await h?.close()
    })

    it("item 2: refuses a mapping to a pre-aggregated Stripe meter (event_time_window hour|day) and stores nothing", async () => {
      const meter = await h.app.request("POST", "/v1/meters", { name: "Tokens", event_name: "tokens", aggregation: { type: "SUM", field: "n" } })
      expect(meter.status).toBe(201)
      const create = (event_name: string, event_time_window?: "hour" | "day") =>
        Effect.runPromise(
          h.emulator.createMeter({
            display_name: event_name,
            event_name,
            default_aggregation: { formula: "sum" },
            // Stripe's documented create parameter (docs.stripe.com/api/billing/meter/create)
            ...(event_time_window ? { event_time_window } : {})
          } as Parameters<Harness["emulator"]["createMeter"]>[0])
        )
      for (const window of ["hour", "day"] as const) {
        const sm = await create(`tokens_${window}`, window)
        expect(sm.event_time_window).toBe(window)
        const put = await h.app.request("PUT", `/v1/stripe/meter-mappings/${meter.data.id}`, { provider_meter_id: sm.id })
        expect(put.status).toBe(400)
        expect(put.error.code).toBe("meter_pre_aggregated_unsupported")
        expect(put.error.details).toMatchObject({ provider_meter_id: sm.id, event_time_window: window })
        expect(put.error.message).toContain(window)
        const get = await h.app.request("GET", `/v1/stripe/meter-mappings/${meter.data.id}`)
        expect([get.status, get.error.code]).toEqual([404, "meter_mapping_not_found"])
      }
      // a raw meter (event_time_window null) is accepted
      const raw = await create("tokens_raw")
      expect(raw.event_time_window).toBeNull()
      const ok = await h.app.request("PUT", `/v1/stripe/meter-mappings/${meter.data.id}`, { provider_meter_id: raw.id })
      expect(ok.status).toBe(200)
      // and an existing mapping is not replaced by a pre-aggregated one
      const later = await create("tokens_day2", "day")
      const refused = await h.app.request("PUT", `/v1/stripe/meter-mappings/${meter.data.id}`, { provider_meter_id: later.id })
      expect([refused.status, refused.error.code]).toEqual([400, "meter_pre_aggregated_unsupported"])
      const still = await h.app.request("GET", `/v1/stripe/meter-mappings/${meter.data.id}`)
      expect(still.data.provider_meter_id).toBe(raw.id)
    })
  })
})

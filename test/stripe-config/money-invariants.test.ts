/**
 * Configuration refusals of issue #12 over HTTP, on PGlite and PostgreSQL: a setting that would
 * make the sync bill wrong is refused with a 4xx and a stable code, and nothing is stored.
 */
import { layer } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
import type { StripeEmulatorHandle } from "../../src/stripe-emulator/index.js"
import { forEachBackend, type Backend } from "../support/app.js"
import { ApiClient, apiError } from "../support/TestApp.js"
import { configuredLayer, Emulator } from "../webhooks/support.js"

/** An API refusal as its class (`_tag`, the status: InvalidInput is 400, NotFound 404) and stable code. */
const coded = (e: { readonly _tag: string; readonly code: string }) => [e._tag, e.code]

forEachBackend(["pglite", "postgres"], (backend: Backend) =>
  layer(configuredLayer(backend), { excludeTestServices: true })(`money-safe configuration on ${backend}`, (it) => {
    it.effect("item 2: refuses a mapping to a pre-aggregated Stripe meter (event_time_window hour|day) and stores nothing", () =>
      Effect.gen(function* () {
        const api = yield* ApiClient
        const emulator = yield* Emulator
        const [meter, created] = yield* api.meters.create({
          payload: { name: "Tokens", event_name: "tokens", aggregation: { type: "SUM", field: "n" } },
          withResponse: true
        })
        expect(created.status).toBe(201)
        const create = (event_name: string, event_time_window?: "hour" | "day") =>
          emulator.createMeter({
            display_name: event_name,
            event_name,
            default_aggregation: { formula: "sum" },
            // Stripe's documented create parameter (docs.stripe.com/api/billing/meter/create)
            ...(event_time_window ? { event_time_window } : {})
          } as Parameters<StripeEmulatorHandle["createMeter"]>[0])
        const put = (provider_meter_id: string) => api.stripeConfig.putMeterMapping({ path: { meter_id: meter.id }, payload: { provider_meter_id } })
        const get = api.stripeConfig.getMeterMapping({ path: { meter_id: meter.id } })
        for (const window of ["hour", "day"] as const) {
          const sm = yield* create(`tokens_${window}`, window)
          expect(sm.event_time_window).toBe(window)
          const refused = yield* apiError(put(sm.id))
          expect(coded(refused)).toEqual(["InvalidInput", "meter_pre_aggregated_unsupported"])
          expect(refused.details).toMatchObject({ provider_meter_id: sm.id, event_time_window: window })
          expect(refused.message).toContain(window)
          expect(coded(yield* apiError(get))).toEqual(["NotFound", "meter_mapping_not_found"])
        }
        // a raw meter (event_time_window null) is accepted
        const raw = yield* create("tokens_raw")
        expect(raw.event_time_window).toBeNull()
        const [, ok] = yield* api.stripeConfig.putMeterMapping({ path: { meter_id: meter.id }, payload: { provider_meter_id: raw.id }, withResponse: true })
        expect(ok.status).toBe(200)
        // and an existing mapping is not replaced by a pre-aggregated one
        const later = yield* create("tokens_day2", "day")
        expect(coded(yield* apiError(put(later.id)))).toEqual(["InvalidInput", "meter_pre_aggregated_unsupported"])
        expect((yield* get).provider_meter_id).toBe(raw.id)
      })
    )
  })
)

/**
 * The emulator's HTTP surface, re-exported from its parts: the app (app.ts), Stripe's routes
 * (routes/*), the layers every call passes (middleware/*) and the control plane (control.ts).
 */
export type { Counters, EmulatorContext, HeldRequest, HoldRule } from "./context.js"
export { RequestInfo } from "./context.js"
export { makeApp } from "./app.js"
export { inspectMeterEvents, inspectRequests, rollKeys } from "./control.js"
export { releaseHeld } from "./middleware/holds.js"
export { endpointKey } from "./http.js"
export { recordExchanges } from "./exchanges.js"
export type { Exchange } from "./exchanges.js"
export { stripeId } from "./state.js"

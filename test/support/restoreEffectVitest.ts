/**
 * Setup file of the test files that share a module graph (vitest.config.ts, project "shared").
 * `layer(…)` of @effect/vitest assigns its runtime's `effect`/`scoped`/… onto the module's
 * exported `it` object (Object.assign on the default API), so in a worker that keeps modules
 * between test files, the next file's plain `it.effect` would run on the previous file's layer —
 * without TestClock when that layer excluded the test services. This puts the pristine methods
 * back before each file (the first file's run records them).
 */
import { it } from "@effect/vitest"

const KEYS = ["effect", "scoped", "live", "scopedLive", "flakyTest", "layer", "prop"] as const
const store = globalThis as { __flexpricePristineEffectIt?: Record<string, unknown> }
const target = it as unknown as Record<string, unknown>

if (store.__flexpricePristineEffectIt === undefined) store.__flexpricePristineEffectIt = Object.fromEntries(KEYS.map((k) => [k, target[k]]))
else Object.assign(target, store.__flexpricePristineEffectIt)

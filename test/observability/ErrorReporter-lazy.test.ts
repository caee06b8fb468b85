/**
 * "SENTRY_DSN unset → nothing loaded": the Sentry SDK modules are imported by `layerSentry` only.
 * The SDK modules are wrapped so the test sees when they are imported and when a client is made.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { vi } from "vitest"
import { ErrorReporter } from "../../src/observability/ErrorReporter.js"

const seen = vi.hoisted(() => ({ coreImports: 0, serverImports: 0, clients: 0 }))

vi.mock("@sentry/core", async (importOriginal) => {
  seen.coreImports++
  return await importOriginal<typeof import("@sentry/core")>()
})

vi.mock("@sentry/core/server", async (importOriginal) => {
  seen.serverImports++
  const original = await importOriginal<typeof import("@sentry/core/server")>()
  class CountingClient extends original.ServerRuntimeClient {
    constructor(...args: ConstructorParameters<typeof original.ServerRuntimeClient>) {
      super(...args)
      seen.clients++
    }
  }
  return { ...original, ServerRuntimeClient: CountingClient }
})

const reporterFromEnv = (env: Record<string, string>) =>
  Effect.flatMap(ErrorReporter, (r) => Effect.as(Effect.zipRight(r.report(new Error("boom")), r.flush("1 second")), r.enabled)).pipe(
    Effect.provide(ErrorReporter.layerFromEnv),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
  )

describe("ErrorReporter loading", () => {
  it.live("without SENTRY_DSN the SDK is never imported and no client is created; with it, it is", () =>
    Effect.gen(function*() {
      expect(yield* reporterFromEnv({ SENTRY_ENVIRONMENT: "staging" })).toBe(false)
      expect(yield* reporterFromEnv({ SENTRY_DSN: "" })).toBe(false)
      expect(seen).toEqual({ coreImports: 0, serverImports: 0, clients: 0 })

      // A DSN whose port refuses connections: the report is dropped, but the SDK was loaded.
      expect(yield* reporterFromEnv({ SENTRY_DSN: "http://k@127.0.0.1:9/5" })).toBe(true)
      expect(seen).toEqual({ coreImports: 1, serverImports: 1, clients: 1 })
    }))
})

/**
 * Keys and session tokens never reach logs, spans or error messages: failing calls are run with a
 * recording tracer and logger, and everything captured is searched for the secrets.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Logger, LogLevel, Option } from "effect"
import Stripe from "stripe"
import { countsAsBreakerFailure } from "../../src/stripe/StripeErrorClass.js"
import { fromSdkError, parseRetryAfterMs, scrubSecrets } from "../../src/stripe/StripeErrors.js"
import { refFor, setup, TEST_KEY } from "./support.js"
import { recordingTracer } from "../support/recordingTracer.js"

const WRONG_KEY = "sk_test_51WrongKeyThatMustNeverLeak0000000000007777"

const recorder = Effect.gen(function* () {
  const { tracer, recorded: spans } = yield* recordingTracer
  const logs: Array<string> = []
  const logger = Logger.make(({ annotations, cause, logLevel, message }) => {
    logs.push(
      JSON.stringify({
        level: logLevel.label,
        message,
        annotations: Object.fromEntries(annotations),
        cause: Cause.isEmpty(cause) ? undefined : Cause.pretty(cause)
      })
    )
  })
  const dumpSpans = () =>
    spans.map((s) =>
      JSON.stringify({
        name: s.name,
        attributes: Object.fromEntries(s.attributes),
        exit: s.status._tag === "Ended" ? Exit.match(s.status.exit, { onSuccess: () => "ok", onFailure: (c) => Cause.pretty(c) }) : "open"
      })
    )
  return { tracer, logger, spans, logs, dumpSpans }
})

describe("Stripe secrets stay out of logs, spans and errors", () => {
  it.live("failing calls: bad key, retried outage, expired session", () =>
    Effect.gen(function* () {
      const { emulator, client, ref } = yield* setup()
      yield* emulator.createMeter({ display_name: "Calls", event_name: "api_calls", default_aggregation: { formula: "sum" } })
      const customer = (yield* emulator.createCustomer({ name: "K" })).id
      const rec = yield* recorder
      const errors: Array<unknown> = []
      const observed = <A, E>(self: Effect.Effect<A, E>) =>
        self.pipe(
          Effect.tapError((e) => Effect.sync(() => errors.push(e))),
          Effect.either,
          Effect.withTracer(rec.tracer),
          Effect.provide(Logger.replace(Logger.defaultLogger, rec.logger)),
          Logger.withMinimumLogLevel(LogLevel.All)
        )

      // 1. A wrong key: Stripe answers 401 mentioning the (masked) key.
      const bad = yield* observed(client.retrieveAccount(refFor(WRONG_KEY)))
      expect(bad._tag).toBe("Left")
      // 2. An outage retried to exhaustion (retry logs, attempt spans).
      yield* emulator.setFaults({ failNext: { count: 4, kind: "server_error" } })
      yield* observed(client.retrieveAccount(ref))
      // 3. A stream send whose session expired: the token is a secret too.
      const event = (id: string) => ({
        eventName: "api_calls",
        identifier: id,
        timestamp: new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000),
        payload: { stripe_customer_id: customer, value: "1" }
      })
      yield* observed(client.sendMeterEventsStream(ref, [event("k1")]))
      yield* emulator.expireSessions()
      const afterExpiry = yield* observed(client.sendMeterEventsStream(ref, [event("k2")]))
      expect(afterExpiry._tag).toBe("Right")

      const spans = rec.dumpSpans()
      const errorTexts = errors.map((e) => `${String(e)} ${(e as Error).message} ${JSON.stringify(e)}`)
      const everything = [...spans, ...rec.logs, ...errorTexts].join("\n")

      // The recording is not empty, and it holds what operators need.
      expect(spans.some((s) => s.includes('"stripe.endpoint":"GET /v1/account"') && s.includes('"http.status_code":401'))).toBe(true)
      expect(spans.some((s) => s.includes('"stripe.outcome":"unavailable"') && s.includes('"stripe.attempts":4'))).toBe(true)
      expect(rec.logs.some((l) => l.includes("stripe call will be retried"))).toBe(true)
      expect(errors.length).toBeGreaterThanOrEqual(2)

      for (const secret of [TEST_KEY, WRONG_KEY, TEST_KEY.slice(8), WRONG_KEY.slice(8)]) {
        expect(everything).not.toContain(secret)
      }
      expect(everything).not.toMatch(/mest_[A-Za-z0-9]{8,}/) // session tokens
    }).pipe(Effect.scoped))

  it("maps an SDK error whose message quotes the key without keeping the key", () => {
    const sdkError = new Stripe.errors.StripeAuthenticationError({
      message: `Invalid API Key provided: ${TEST_KEY}`,
      statusCode: 401,
      requestId: "req_1"
    } as never)
    const mapped = fromSdkError(sdkError, { secrets: [TEST_KEY], nowMs: 0 })
    expect(mapped?._tag).toBe("StripeAuthenticationFailed")
    const text = `${String(mapped)} ${JSON.stringify(mapped)} ${(mapped as Error).message}`
    expect(text).not.toContain(TEST_KEY)
    expect(text).toContain("[redacted]")
  })

  it("scrubs key-shaped strings it was not told about", () => {
    expect(scrubSecrets(`key ${["rk", "live", ""].join("_")}abcDEF123456 and sk_test_xyz`)).toBe("key [redacted] and [redacted]")
  })

  it("maps rate limits with Retry-After and Stripe-Should-Retry", () => {
    const e = new Stripe.errors.StripeRateLimitError({
      message: "slow down",
      statusCode: 429,
      headers: { "retry-after": "3", "stripe-should-retry": "false" }
    } as never)
    const mapped = fromSdkError(e, { secrets: [], nowMs: 0 })
    expect(mapped).toMatchObject({ _tag: "StripeRateLimited", retryAfterMs: 3000, shouldRetry: false })
    expect(parseRetryAfterMs("Wed, 21 Oct 2015 07:28:10 GMT", Date.parse("Wed, 21 Oct 2015 07:28:00 GMT"))).toBe(10_000)
    expect(Option.fromNullable(parseRetryAfterMs("soon", 0))).toEqual(Option.none())
  })

  it("maps permission, conflict and server errors to the right tags", () => {
    const perm = fromSdkError(new Stripe.errors.StripePermissionError({ message: "no", statusCode: 403 } as never), { secrets: [], nowMs: 0 })
    expect(perm).toMatchObject({ _tag: "StripeAuthenticationFailed", reason: "permission_denied", status: 403 })
    const conflict = fromSdkError(new Stripe.errors.StripeAPIError({ message: "lock", statusCode: 409 } as never), { secrets: [], nowMs: 0 })
    expect(conflict).toMatchObject({ _tag: "StripeUnavailable", reason: "conflict" })
    const server = fromSdkError(new Stripe.errors.StripeAPIError({ message: "oops", statusCode: 502 } as never), { secrets: [], nowMs: 0 })
    expect(server).toMatchObject({ _tag: "StripeUnavailable", reason: "server_error", status: 502 })
    expect(fromSdkError(new TypeError("a bug"), { secrets: [], nowMs: 0 })).toBeUndefined()
  })

  it("recognises a 5xx Stripe replayed from a saved result (Idempotent-Replayed), which the breaker does not count", () => {
    const replayed = fromSdkError(
      new Stripe.errors.StripeAPIError({
        message: "An unknown error occurred",
        statusCode: 500,
        headers: { "idempotent-replayed": "true", "stripe-should-retry": "false" }
      } as never),
      { secrets: [], nowMs: 0 }
    )
    expect(replayed).toMatchObject({ _tag: "StripeUnavailable", reason: "server_error", replayed: true, shouldRetry: false })
    expect(countsAsBreakerFailure(replayed!)).toBe(false)
    const fresh = fromSdkError(new Stripe.errors.StripeAPIError({ message: "oops", statusCode: 500 } as never), { secrets: [], nowMs: 0 })
    expect(fresh).toMatchObject({ _tag: "StripeUnavailable", reason: "server_error" })
    expect((fresh as { replayed?: boolean }).replayed).toBeUndefined()
    expect(countsAsBreakerFailure(fresh!)).toBe(true)
  })
})

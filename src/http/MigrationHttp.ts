/** Handlers of the migration group: HTTP ↔ MigrationRunner / MigrationService, nothing more. */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { Multipart } from "@effect/platform"
import { Config, Effect, Layer, Option, Stream } from "effect"
import { Conflict, InternalError, InvalidInput, PayloadTooLarge, UpstreamFailed } from "../domain/Errors.js"
import type { CsvRowProblem } from "../migration/CsvMapping.js"
import { MigrationRunner } from "../migration/MigrationRunner.js"
import { type CsvImportResult, MigrationService, type VerifyResult } from "../migration/MigrationService.js"
import type { MigrationJob, RollbackReport } from "../migration/Model.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { isStripeError, type StripeError } from "../stripe/StripeErrors.js"
import type { StripeNotConfigured } from "../stripe/StripeAccounts.js"
import type { DecryptionFailed } from "../security/Encryption.js"
import { FlexPriceApi } from "./Api.js"
import { orUnavailable } from "./Errors.js"

/** FLEXPRICE_MIGRATION_CSV_MAX_BYTES: the largest CSV accepted (default 10 MiB). */
export const CsvMaxBytes = Config.integer("FLEXPRICE_MIGRATION_CSV_MAX_BYTES").pipe(
  Config.withDefault(10 * 1024 * 1024),
  Config.validate({ message: "expected a positive integer number of bytes", validation: (n) => n > 0 })
)

export const migrationView = (j: MigrationJob) => ({
  migration_id: j.id,
  kind: j.kind,
  status: j.status,
  dry_run: j.dryRun,
  options: { create_missing_customers: j.options.createMissingCustomers, conflict_strategy: j.options.conflictStrategy },
  counts: j.counts,
  progress: { pages: j.pages, last_cursor: j.cursor },
  problems: j.problems,
  problems_total: j.problemsTotal,
  error: j.error,
  started_at: j.startedAt.toISOString(),
  finished_at: j.finishedAt === null ? null : j.finishedAt.toISOString(),
  heartbeat_at: j.heartbeatAt.toISOString(),
  rollback: j.rollback
})

export const rollbackView = (id: string, r: RollbackReport) => ({ migration_id: id, status: "rolled_back" as const, ...r })

export const verifyView = (v: VerifyResult) => ({
  migration_id: v.migrationId,
  checked: v.checked,
  ok: v.ok,
  mismatches: v.mismatches.map((m) => ({
    mapping_id: m.mappingId,
    customer_id: m.customerId,
    external_id: m.externalId,
    stripe_customer_id: m.stripeCustomerId,
    problem: m.problem,
    detail: m.detail
  }))
})

const rowView = (p: CsvRowProblem) => ({
  line: p.line,
  code: p.code,
  reason: p.reason,
  ...(p.externalId !== undefined ? { external_id: p.externalId } : {}),
  ...(p.stripeCustomerId !== undefined ? { stripe_customer_id: p.stripeCustomerId } : {})
})

export const csvImportView = (r: CsvImportResult) => ({
  migration_id: r.migrationId,
  status: r.status,
  dry_run: r.dryRun,
  applied: r.applied,
  total_rows: r.totalRows,
  valid_rows: r.validRows,
  bad_row_count: r.badRows.length,
  counts: r.counts,
  bad_rows: r.badRows.map(rowView),
  warnings: r.warnings.map(rowView)
})

const tooLarge = (max: number) =>
  new PayloadTooLarge({ code: "payload_too_large", message: `the CSV exceeds ${max} bytes (FLEXPRICE_MIGRATION_CSV_MAX_BYTES)`, details: { max_bytes: max } })

/** Collect a byte stream into text, failing as soon as it passes `max` bytes. */
const collectCapped = <E>(stream: Stream.Stream<Uint8Array, E>, max: number, onError: (e: E) => InvalidInput | PayloadTooLarge) =>
  stream.pipe(
    Stream.runFoldEffect({ size: 0, parts: [] as Array<Uint8Array> }, (acc, chunk) => {
      const size = acc.size + chunk.length
      if (size > max) return Effect.fail(tooLarge(max) as InvalidInput | PayloadTooLarge)
      acc.parts.push(chunk)
      return Effect.succeed({ size, parts: acc.parts })
    }),
    Effect.catchAll((e) => Effect.fail(e instanceof PayloadTooLarge || e instanceof InvalidInput ? e : onError(e as E))),
    Effect.map(({ parts }) => Buffer.concat(parts).toString("utf8"))
  )

/** `text/csv` (or any text) body, or the first file part of a multipart/form-data body. */
const readCsvBody = (request: HttpServerRequest.HttpServerRequest, max: number) =>
  Effect.gen(function* () {
    const declared = Number(request.headers["content-length"] ?? "0")
    if (declared > max) return yield* tooLarge(max)
    const contentType = (request.headers["content-type"] ?? "").toLowerCase()
    if (contentType.startsWith("multipart/form-data")) {
      const multipartError = (e: Multipart.MultipartError) =>
        e.reason === "FileTooLarge" || e.reason === "BodyTooLarge" || e.reason === "FieldTooLarge"
          ? tooLarge(max)
          : InvalidInput.of("invalid_multipart", `the multipart body could not be read (${e.reason})`)
      const part = yield* request.multipartStream.pipe(
        Stream.filter((p) => p._tag === "File" || (p._tag === "Field" && (p.key === "file" || p.key === "csv"))),
        Stream.runHead,
        Effect.catchAll((e) => Effect.fail(multipartError(e)))
      )
      if (Option.isNone(part)) return yield* InvalidInput.of("missing_file", "the multipart body has no file part (send the CSV as field `file`)")
      const p = part.value
      if (p._tag === "Field") {
        if (Buffer.byteLength(p.value) > max) return yield* tooLarge(max)
        return p.value
      }
      return yield* collectCapped((p as Multipart.File).content, max, multipartError)
    }
    return yield* collectCapped(request.stream, max, () => InvalidInput.of("unreadable_body", "the request body could not be read"))
  })

const flag = (v: string | undefined, fallback: boolean) => (v === undefined ? fallback : v === "true" || v === "1")

type AccessError = StripeNotConfigured | DecryptionFailed

const isAccessError = (e: unknown): e is AccessError =>
  typeof e === "object" && e !== null && "_tag" in e && (e._tag === "StripeNotConfigured" || e._tag === "DecryptionFailed")

/** A missing Stripe configuration is the caller's to fix (400); an undecryptable key is ours (500). */
const orAccessError = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.catchIf(effect, isAccessError, (e) =>
    Effect.fail(
      e._tag === "StripeNotConfigured"
        ? InvalidInput.of("stripe_not_configured", "Stripe is not configured for this environment (PUT /v1/stripe/config)")
        : InternalError.of("decryption_failed", "the stored Stripe key could not be decrypted")
    )
  ) as Effect.Effect<A, Exclude<E, AccessError> | InvalidInput | InternalError, R>

/** Stripe refused or was unreachable: 502 with Stripe's error code. */
const orUpstream = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.catchIf(effect, (e: unknown): e is StripeError => isStripeError(e), (e) =>
    Effect.fail(new UpstreamFailed({ code: e.code, message: e.message }))
  ) as Effect.Effect<A, Exclude<E, StripeError> | UpstreamFailed, R>

export const MigrationHttpLive = HttpApiBuilder.group(FlexPriceApi, "stripeMigration", (handlers) =>
  Effect.gen(function* () {
    const runner = yield* MigrationRunner
    const service = yield* MigrationService
    const accounts = yield* StripeAccounts
    const maxBytes = yield* CsvMaxBytes
    return handlers
      .handle("start", ({ payload }) =>
        Effect.gen(function* () {
          // Fail fast on a missing or unreadable key rather than starting a job that fails at once.
          yield* accounts.refForOperation("stripe_customer_migration")
          const job = yield* runner.submit({
            dryRun: payload.dry_run,
            createMissingCustomers: payload.create_missing_customers,
            conflictStrategy: payload.conflict_strategy
          })
          return { migration_id: job.id, status: "running" as const }
        }).pipe(
          Effect.catchTag("MigrationAlreadyRunning", (e) =>
            Effect.fail(Conflict.of("migration_running", `migration ${e.runningId} is running in this environment`, { running_id: e.runningId }))
          ),
          orAccessError,
          orUpstream,
          orUnavailable
        )
      )
      .handle("status", ({ path }) => service.mustGet(path.migration_id).pipe(Effect.map(migrationView), orUnavailable))
      .handle("list", ({ urlParams }) =>
        Effect.gen(function* () {
          const limit = urlParams.limit ?? 20
          const jobs = yield* service.list({ limit: limit + 1, before: urlParams.cursor })
          const page = jobs.slice(0, limit)
          return { migrations: page.map(migrationView), next_cursor: jobs.length > limit ? (page[page.length - 1]?.id ?? null) : null }
        }).pipe(orUnavailable)
      )
      .handle("rollback", ({ path }) =>
        service.rollback(path.migration_id).pipe(Effect.map((r) => rollbackView(path.migration_id, r)), orUnavailable)
      )
      .handle("verify", ({ path }) => service.verify(path.migration_id).pipe(Effect.map(verifyView), orAccessError, orUpstream, orUnavailable))
      .handleRaw("importCsv", ({ request, urlParams }) =>
        Effect.gen(function* () {
          const text = yield* readCsvBody(request, maxBytes)
          const result = yield* service.importCsv(
            text,
            {
              verify: flag(urlParams.verify, false),
              allOrNothing: flag(urlParams.all_or_nothing, false),
              dryRun: flag(urlParams.dry_run, false),
              createMissingCustomers: flag(urlParams.create_missing_customers, true),
              conflictStrategy: urlParams.conflict_strategy ?? "skip"
            },
            runner.owner
          )
          return HttpServerResponse.unsafeJson(csvImportView(result))
        }).pipe(
          Effect.catchTag("MigrationAlreadyRunning", (e) =>
            Effect.fail(Conflict.of("migration_running", `migration ${e.runningId} is running in this environment`, { running_id: e.runningId }))
          ),
          orAccessError,
          orUpstream,
          orUnavailable
        )
      )
  })
)

export const MigrationHttpWithRunnerLive = MigrationHttpLive.pipe(Layer.provide(MigrationRunner.Default))

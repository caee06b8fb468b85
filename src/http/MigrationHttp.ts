/** Handlers of the migration group: HTTP ↔ MigrationRunner / MigrationService, nothing more. */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { Multipart } from "@effect/platform"
import { Effect, Layer, Option, Stream } from "effect"
import { Conflict, InternalError, InvalidInput, NotFound, PayloadTooLarge, UpstreamFailed } from "../domain/Errors.js"
import { MigrationRunner } from "../migration/MigrationRunner.js"
import { MigrationService } from "../migration/MigrationService.js"
import type { MigrationJob, MigrationTask, VerifyProgress } from "../migration/Model.js"
import { MigrationAlreadyRunning } from "../repositories/MigrationJobRepo.js"
import { MigrationTaskRepo } from "../repositories/MigrationTaskRepo.js"
import { StripeAccounts } from "../stripe/StripeAccounts.js"
import { isStripeError, type StripeError } from "../stripe/StripeErrors.js"
import type { StripeNotConfigured } from "../stripe/StripeAccounts.js"
import type { DecryptionFailed } from "../security/Encryption.js"
import { FlexPriceApi } from "./Api.js"
import { orUnavailable } from "./Errors.js"
import { integerSetting } from "../config/Settings.js"

/** FLEXPRICE_MIGRATION_CSV_MAX_BYTES: the largest CSV accepted (default 10 MiB). */
export const CsvMaxBytes = integerSetting("FLEXPRICE_MIGRATION_CSV_MAX_BYTES", { default: 10 * 1024 * 1024, min: 1 })

export const migrationView = (j: MigrationJob) => ({
  migration_id: j.id,
  kind: j.kind,
  status: j.status,
  dry_run: j.dryRun,
  options: { create_missing_customers: j.options.createMissingCustomers, conflict_strategy: j.options.conflictStrategy },
  counts: j.counts,
  progress: { pages: j.pages, last_cursor: j.cursor, rows_done: j.rowsDone, rows_total: j.rowsTotal },
  problems: j.problems,
  problems_total: j.problemsTotal,
  error: j.error,
  started_at: j.startedAt.toISOString(),
  finished_at: j.finishedAt === null ? null : j.finishedAt.toISOString(),
  heartbeat_at: j.heartbeatAt.toISOString(),
  rollback: j.rollback,
  csv: j.csv
})

export const statusUrl = (migrationId: string) => `/v1/stripe/migrate/status/${migrationId}`
export const taskUrl = (taskId: string) => `/v1/stripe/migrate/tasks/${taskId}`

export const taskView = (t: MigrationTask) => ({
  task_id: t.id,
  migration_id: t.migrationId,
  kind: t.kind,
  status: t.status,
  status_url: taskUrl(t.id),
  progress: { done: t.done, total: t.total },
  result: t.result,
  error: t.error,
  started_at: t.startedAt.toISOString(),
  finished_at: t.finishedAt === null ? null : t.finishedAt.toISOString(),
  heartbeat_at: t.heartbeatAt.toISOString()
})

export const verifyView = (t: MigrationTask) => {
  const r = t.result as Partial<VerifyProgress>
  return { ...taskView(t), checked: r.checked ?? 0, ok: r.ok ?? 0, mismatches: r.mismatches ?? [], mismatches_total: r.mismatches_total ?? 0 }
}

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

/** A job submission's refusals: one already running (409), the Stripe key, Stripe, the database. */
const orSubmitError = <A, E, R>(effect: Effect.Effect<A, E | MigrationAlreadyRunning, R>) =>
  effect.pipe(
    Effect.catchIf(
      (e): e is MigrationAlreadyRunning => e instanceof MigrationAlreadyRunning,
      (e) => Effect.fail(Conflict.of("migration_running", `migration ${e.runningId} is running in this environment`, { running_id: e.runningId }))
    ),
    orAccessError,
    orUpstream,
    orUnavailable
  )

export const MigrationHttpLive = HttpApiBuilder.group(FlexPriceApi, "stripeMigration", (handlers) =>
  Effect.gen(function* () {
    const runner = yield* MigrationRunner
    const service = yield* MigrationService
    const tasks = yield* MigrationTaskRepo
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
        }).pipe(orSubmitError)
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
      .handle("rollback", ({ path }) => runner.submitRollback(path.migration_id).pipe(Effect.map(taskView), orUnavailable))
      .handle("startVerify", ({ path }) => runner.submitVerify(path.migration_id).pipe(Effect.map(verifyView), orAccessError, orUpstream, orUnavailable))
      .handle("verify", ({ path }) =>
        // The latest verification; the first GET starts one (as the only verify call did before it ran in the background).
        Effect.flatMap(service.mustGet(path.migration_id), () => tasks.latest(path.migration_id, "verify")).pipe(
          Effect.flatMap(Option.match({ onSome: Effect.succeed, onNone: () => runner.submitVerify(path.migration_id) })),
          Effect.map(verifyView),
          orAccessError,
          orUpstream,
          orUnavailable
        )
      )
      .handle("task", ({ path }) =>
        tasks.get(path.task_id).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(NotFound.of("migration_task", path.task_id)), onSome: Effect.succeed })),
          Effect.map(taskView),
          orUnavailable
        )
      )
      .handleRaw("importCsv", ({ request, urlParams }) =>
        Effect.gen(function* () {
          const text = yield* readCsvBody(request, maxBytes)
          const verify = flag(urlParams.verify, false)
          // Fail fast on a missing or unreadable key rather than starting an import that fails at once.
          if (verify) yield* accounts.refForOperation("stripe_csv_verify")
          const job = yield* runner.submitCsv(text, {
            verify,
            allOrNothing: flag(urlParams.all_or_nothing, false),
            dryRun: flag(urlParams.dry_run, false),
            createMissingCustomers: flag(urlParams.create_missing_customers, true),
            conflictStrategy: urlParams.conflict_strategy ?? "skip"
          })
          return HttpServerResponse.unsafeJson({ migration_id: job.id, status: "running", status_url: statusUrl(job.id) }, { status: 202 })
        }).pipe(orSubmitError)
      )
  })
)

export const MigrationHttpWithRunnerLive = MigrationHttpLive.pipe(Layer.provide(MigrationRunner.Default))

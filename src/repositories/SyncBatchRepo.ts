/**
 * The sync ledger (`stripe_sync_batches`) and the pipeline's progress tables
 * (`stripe_sync_windows`, `stripe_sync_window_meters`, `stripe_sync_meter_marks`), plus the run
 * log (`stripe_sync_runs`). Every statement is scoped by the CurrentTenant.
 *
 * Bulk writes pass one array per column (`unnest`, src/db/SqlArrays.ts) or one `jsonb_to_recordset`
 * parameter: a page of 10,000 batches is one statement with a handful of parameters. Quantities
 * travel as decimal strings and are cast to numeric by the database, never through a JS number.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { makeProgress } from "./ledger/Progress.js"
import { makeQueue } from "./ledger/Queue.js"
import { makeReports } from "./ledger/Reports.js"

export * from "./ledger/Model.js"

/** The ledger's statements, by concern: progress and window passes, the push queue, reads. */
export class SyncBatchRepo extends Effect.Service<SyncBatchRepo>()("flexprice/SyncBatchRepo", {
  effect: Effect.map(PgClient.PgClient, (sql) => ({ ...makeProgress(sql), ...makeQueue(sql), ...makeReports(sql) }) as const)
}) {}

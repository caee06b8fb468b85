/** Public surface of the Stripe customer migration and bulk CSV mapping (SPEC §9). */
import { Layer } from "effect"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { MigrationTaskRepo } from "../repositories/MigrationTaskRepo.js"
import { CsvImport } from "./CsvImport.js"
import { JobGate } from "./JobGate.js"
import { MigrationService } from "./MigrationService.js"
import { Rollback } from "./Rollback.js"
import { Verify } from "./Verify.js"

export * from "./Model.js"
export { parseCsv, formatCsv, formatCsvField, csvItems, type CsvRecord, type CsvParseResult, type CsvSyntaxError } from "./Csv.js"
export { parseCsvMapping, type CsvMappingRow, type CsvRowProblem, type CsvMappingParse } from "./CsvMapping.js"
export { MigrationService, type PageListener } from "./MigrationService.js"
export { CsvImport, type CsvImportOptions } from "./CsvImport.js"
export { Rollback } from "./Rollback.js"
export { Verify } from "./Verify.js"
export { MigrationRunner, MigrationRunnerConfig } from "./MigrationRunner.js"

/**
 * The migration services and their repositories, over the app's services (StripeAccounts,
 * CustomerLinker, StripeClient, EventStore, database). The background runner is not here: it
 * lives with the HTTP server (see http/MigrationHttp.ts), so CLI commands never resume jobs.
 */
export const MigrationLive = Layer.mergeAll(MigrationService.Default, CsvImport.Default, Verify.Default).pipe(
  Layer.provideMerge(Rollback.Default),
  Layer.provideMerge(JobGate.Default),
  Layer.provideMerge(Layer.mergeAll(MigrationJobRepo.Default, MigrationTaskRepo.Default))
)

/** Public surface of the Stripe customer migration and bulk CSV mapping (SPEC §9). */
import { Layer } from "effect"
import { MigrationJobRepo } from "../repositories/MigrationJobRepo.js"
import { MigrationService } from "./MigrationService.js"

export * from "./Model.js"
export { parseCsv, formatCsv, formatCsvField, type CsvRecord, type CsvParseResult, type CsvSyntaxError } from "./Csv.js"
export { parseCsvMapping, type CsvMappingRow, type CsvRowProblem, type CsvMappingParse } from "./CsvMapping.js"
export { MigrationService, type CsvImportOptions, type CsvImportResult, type PageListener, type VerifyResult } from "./MigrationService.js"
export { MigrationRunner, MigrationRunnerConfig } from "./MigrationRunner.js"

/**
 * The migration service and its job repository, over the app's services (StripeAccounts,
 * CustomerLinker, StripeClient, EventStore, database). The background runner is not here: it
 * lives with the HTTP server (see http/MigrationHttp.ts), so CLI commands never resume jobs.
 */
export const MigrationLive = MigrationService.Default.pipe(Layer.provideMerge(MigrationJobRepo.Default))

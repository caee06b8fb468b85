/** Setup of the mutation run (vitest.mutation.config.ts): fewer fast-check runs per property. */
import fc from "fast-check"

fc.configureGlobal({ numRuns: Number(process.env["FC_MAX_RUNS"] ?? "25") })

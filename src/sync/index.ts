/** The sync pipeline's public surface and its Layer (needs AppLive's repositories, EventStore, Stripe services). */
import { Layer } from "effect"
import { SyncBatchRepo } from "../repositories/SyncBatchRepo.js"
import { CallBudget } from "./CallBudget.js"
import { SyncLease } from "./SyncLease.js"
import { SyncPipeline } from "./SyncPipeline.js"
import { SyncHealth } from "./SyncHealth.js"
import { SyncService } from "./SyncService.js"

export { SyncScheduler } from "./SyncScheduler.js"
export { SyncService, type TenantOutcome } from "./SyncService.js"
export { SyncPipeline, WindowNotClosed, type RunOptions, type RunReport, type WindowReport } from "./SyncPipeline.js"
export { SyncLease, LeaseBusy, LeaseLost } from "./SyncLease.js"
export { SyncSettings } from "./SyncSettings.js"
export { SyncHealth } from "./SyncHealth.js"
export { CallBudget } from "./CallBudget.js"

/** SyncService + SyncPipeline + SyncLease + SyncBatchRepo + SyncHealth + CallBudget (all exposed; one CallBudget for every spender). */
export const SyncLive = Layer.merge(SyncService.Default, SyncHealth.Default).pipe(
  Layer.provideMerge(SyncPipeline.Default),
  Layer.provideMerge(Layer.mergeAll(SyncBatchRepo.Default, SyncLease.Default, CallBudget.Default))
)

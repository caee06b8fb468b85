/** What every demo phase works with: the emulator, the HTTP client and the progress log. */
import type { StripeEmulatorHandle } from "../stripe-emulator/index.js"
import type { DemoClient } from "./Client.js"
import type { Progress } from "./Progress.js"

export interface DemoRun {
  readonly emulator: StripeEmulatorHandle
  readonly client: DemoClient
  readonly progress: Progress
}

export const WEBHOOK_SECRET_BYTES = 24
export const NO_STRIPE_CUSTOMERS = 3
export const UNMAPPED_STRIPE_CUSTOMERS = 3
export const pad = (n: number, width = 4) => String(n).padStart(width, "0")

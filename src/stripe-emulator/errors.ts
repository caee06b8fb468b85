import { Data } from "effect"

/**
 * An error the emulator answers with, in Stripe's shape. v1 bodies are
 * `{"error":{"type","code","message","param","doc_url","request_log_url"}}`; v2 bodies carry
 * `type` and `code` too (stripe-node dispatches v2 errors on `type`).
 */
export class StripeEmulatorError extends Data.TaggedError("StripeEmulatorError")<{
  readonly status: number
  readonly type: string
  readonly message: string
  readonly code?: string | undefined
  readonly param?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * The code Stripe reports for this rule when a v2 stream event breaks it asynchronously
   * (`v1.billing.meter.error_report_triggered`, reason.error_types[].code).
   */
  readonly asyncCode?: string | undefined
}> {}

export const invalidRequest = (
  message: string,
  extra: { readonly code?: string; readonly param?: string; readonly status?: number; readonly asyncCode?: string } = {}
): StripeEmulatorError =>
  new StripeEmulatorError({
    status: extra.status ?? 400,
    type: "invalid_request_error",
    message,
    code: extra.code,
    param: extra.param,
    asyncCode: extra.asyncCode,
    headers: { "Stripe-Should-Retry": "false" }
  })

export const missingParam = (param: string): StripeEmulatorError =>
  invalidRequest(`Missing required param: ${param}.`, { code: "parameter_missing", param })

export const invalidParam = (param: string, message: string): StripeEmulatorError =>
  invalidRequest(message, { code: "parameter_invalid", param })

export const noSuch = (kind: string, id: string, param = "id"): StripeEmulatorError =>
  invalidRequest(`No such ${kind}: '${id}'`, { code: "resource_missing", param, status: 404 })

/** Stripe shows the key's prefix and last four characters only. */
export const maskKey = (key: string): string => {
  const prefix = /^[a-z]{2,5}_(test|live)_/.exec(key)?.[0] ?? ""
  return `${prefix}${"*".repeat(Math.max(4, key.length - prefix.length - 4))}${key.slice(-4)}`
}

export const errorBody = (e: StripeEmulatorError, requestId: string): Record<string, unknown> => {
  const error: Record<string, unknown> = { type: e.type, message: e.message }
  if (e.code) {
    error.code = e.code
    error.doc_url = `https://stripe.com/docs/error-codes/${e.code.replace(/_/g, "-")}`
  }
  if (e.param) error.param = e.param
  error.request_log_url = `https://dashboard.stripe.com/test/logs/${requestId}`
  return { error }
}

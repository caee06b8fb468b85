/** An error shaped like the Stripe client's typed errors (a `_tag` and a stable `code`). */
export class StripeLikeError extends Error {
  readonly _tag = "StripeLikeError"
  readonly code = "stripe_authentication_failed"
  constructor(message: string) {
    super(message)
    this.name = "StripeLikeError"
  }
}

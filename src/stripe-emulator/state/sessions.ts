/** v2 meter event sessions (https://docs.stripe.com/api/v2/billing-meter-stream/session). */
import { iso, type MeterEventSession, SESSION_TTL_MS, stripeId } from "./model.js"

export class Sessions {
  private readonly sessions = new Map<string, { session: MeterEventSession; expiresAtMs: number }>()

  constructor(private readonly livemode: boolean) {}

  create(nowMs: number): MeterEventSession {
    for (const [token, s] of this.sessions) {
      if (s.expiresAtMs <= nowMs) this.sessions.delete(token)
    }
    const expiresAtMs = nowMs + SESSION_TTL_MS
    const session: MeterEventSession = {
      id: stripeId("mes", 24),
      object: "v2.billing.meter_event_session",
      authentication_token: stripeId("mest", 40),
      created: iso(nowMs),
      expires_at: iso(expiresAtMs),
      livemode: this.livemode
    }
    this.sessions.set(session.authentication_token, { session, expiresAtMs })
    return session
  }

  /** "valid", "expired" (known but past its expiry) or "unknown". */
  check(token: string, nowMs: number): "valid" | "expired" | "unknown" {
    const s = this.sessions.get(token)
    if (!s) return "unknown"
    return s.expiresAtMs > nowMs ? "valid" : "expired"
  }

  /** Fault injection: every session issued so far is expired from now on. */
  expireAll(nowMs: number): number {
    let n = 0
    for (const s of this.sessions.values()) {
      if (s.expiresAtMs > nowMs) {
        s.expiresAtMs = nowMs
        n++
      }
    }
    return n
  }
}

/** Billing meters of the emulated account (https://docs.stripe.com/api/billing/meter). */
import { invalidParam, invalidRequest, missingParam, noSuch } from "../errors.js"
import type { FormObject } from "../form.js"
import { type ListParams, type Meter, type MeterParams, type Page, paginate, stripeId } from "./model.js"

export class Meters {
  private readonly meters = new Map<string, { meter: Meter; index: number }>()
  private readonly order: Array<string> = []
  private readonly activeByEvent = new Map<string, string>()

  constructor(private readonly livemode: boolean) {}

  create(params: FormObject | MeterParams, nowMs: number): Meter {
    const p = params as FormObject
    const displayName = p.display_name
    if (typeof displayName !== "string" || displayName === "") throw missingParam("display_name")
    const eventName = p.event_name
    if (typeof eventName !== "string" || eventName === "") throw missingParam("event_name")
    if (eventName.length > 100) throw invalidParam("event_name", "event_name must be at most 100 characters.")
    const aggregation = p.default_aggregation as FormObject | undefined
    const formula = aggregation?.formula
    if (formula === undefined) throw missingParam("default_aggregation[formula]")
    if (formula !== "sum" && formula !== "count" && formula !== "last") {
      throw invalidParam(
        "default_aggregation[formula]",
        `Invalid default_aggregation[formula]: must be one of count, last, or sum`
      )
    }
    if (this.activeByEvent.has(eventName)) {
      throw invalidRequest(`An active meter with event_name \`${eventName}\` already exists.`, {
        code: "resource_already_exists",
        param: "event_name"
      })
    }
    const mapping = p.customer_mapping as FormObject | undefined
    const mappingType = mapping?.type ?? "by_id"
    if (mappingType !== "by_id") throw invalidParam("customer_mapping[type]", "customer_mapping[type] must be by_id")
    const customerKey = mapping?.event_payload_key ?? "stripe_customer_id"
    const valueKey = (p.value_settings as FormObject | undefined)?.event_payload_key ?? "value"
    if (typeof customerKey !== "string" || typeof valueKey !== "string") {
      throw invalidParam("customer_mapping[event_payload_key]", "Invalid payload key")
    }
    const windowParam = p.event_time_window
    if (windowParam !== undefined && windowParam !== "day" && windowParam !== "hour") {
      throw invalidParam("event_time_window", "Invalid event_time_window: must be one of day or hour")
    }
    const created = Math.floor(nowMs / 1000)
    const meter: Meter = {
      id: stripeId("mtr", 24),
      object: "billing.meter",
      created,
      customer_mapping: { event_payload_key: customerKey, type: "by_id" },
      default_aggregation: { formula },
      display_name: displayName,
      event_name: eventName,
      event_time_window: windowParam === "day" || windowParam === "hour" ? windowParam : null,
      livemode: this.livemode,
      status: "active",
      status_transitions: { deactivated_at: null },
      updated: created,
      value_settings: { event_payload_key: valueKey }
    }
    this.meters.set(meter.id, { meter, index: this.order.length })
    this.order.push(meter.id)
    this.activeByEvent.set(eventName, meter.id)
    return meter
  }

  retrieve(id: string): Meter {
    const e = this.meters.get(id)
    if (!e) throw noSuch("billing.meter", id)
    return e.meter
  }

  update(id: string, params: FormObject, nowMs: number): Meter {
    const e = this.meters.get(id)
    if (!e) throw noSuch("billing.meter", id)
    const name = params.display_name
    if (name !== undefined && (typeof name !== "string" || name === "")) {
      throw invalidParam("display_name", "Invalid display_name")
    }
    e.meter = { ...e.meter, display_name: name ?? e.meter.display_name, updated: Math.floor(nowMs / 1000) }
    return e.meter
  }

  setStatus(id: string, status: "active" | "inactive", nowMs: number): Meter {
    const e = this.meters.get(id)
    if (!e) throw noSuch("billing.meter", id)
    const now = Math.floor(nowMs / 1000)
    if (status === "inactive") {
      if (e.meter.status === "inactive") throw invalidRequest(`Meter ${id} is already inactive.`)
      if (this.activeByEvent.get(e.meter.event_name) === id) this.activeByEvent.delete(e.meter.event_name)
      e.meter = { ...e.meter, status, status_transitions: { deactivated_at: now }, updated: now }
    } else {
      if (e.meter.status === "active") throw invalidRequest(`Meter ${id} is already active.`)
      if (this.activeByEvent.has(e.meter.event_name)) {
        throw invalidRequest(`An active meter with event_name \`${e.meter.event_name}\` already exists.`, {
          code: "resource_already_exists"
        })
      }
      this.activeByEvent.set(e.meter.event_name, id)
      e.meter = { ...e.meter, status, status_transitions: { deactivated_at: null }, updated: now }
    }
    return e.meter
  }

  list(params: ListParams & { readonly status?: string | undefined }): Page<Meter> {
    return paginate(
      this.order,
      (id) => this.meters.get(id)?.index,
      (id) => {
        const m = this.meters.get(id)?.meter
        if (!m || (params.status !== undefined && m.status !== params.status)) return undefined
        return m
      },
      params,
      "billing.meter"
    )
  }

  all(): ReadonlyArray<Meter> {
    return this.order.map((id) => this.meters.get(id)!.meter)
  }

  // ---------------------------------------------------------------- meter events

  /** The active meter with this event name (one at most, as Stripe enforces). */
  active(eventName: string): Meter | undefined {
    const id = this.activeByEvent.get(eventName)
    return id === undefined ? undefined : this.meters.get(id)!.meter
  }

  /** The newest meter (active or not) with this event name, if any. */
  anyByEventName(eventName: string): Meter | undefined {
    for (let i = this.order.length - 1; i >= 0; i--) {
      const m = this.meters.get(this.order[i]!)!.meter
      if (m.event_name === eventName) return m
    }
    return undefined
  }
}

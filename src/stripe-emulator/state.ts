/**
 * The emulator's in-memory Stripe account. Plain synchronous code over Maps so a request costs
 * O(1) (O(page) for lists): the benchmark pushes ~100,000 meter events through it. Time is
 * always passed in (`nowMs`) so the caller decides which clock applies.
 *
 * One facade over the account's parts, each in `state/`: customers, meters, meter events (with
 * their summaries) and v2 sessions; `state/model.ts` holds Stripe's object shapes and limits.
 */
import type { FormObject } from "./form.js"
import { Customers } from "./state/customers.js"
import { MeterEvents } from "./state/meterEvents.js"
import { Meters } from "./state/meters.js"
import type {
  Customer,
  CustomerParams,
  DeletedCustomer,
  ListParams,
  Meter,
  MeterEvent,
  MeterEventInput,
  MeterEventRecord,
  MeterEventSession,
  MeterParams,
  Page,
  ReceivedMeterEvent,
  StreamEventError,
  SummaryBucket,
  Totals
} from "./state/model.js"
import { stripeId } from "./state/model.js"
import { Sessions } from "./state/sessions.js"

export * from "./state/model.js"
export { StripeEmulatorError } from "./errors.js"

export class EmulatorState {
  readonly accountId: string
  private readonly customers: Customers
  private readonly meters: Meters
  private readonly events: MeterEvents
  private readonly sessions: Sessions

  constructor(readonly livemode: boolean) {
    this.accountId = stripeId("acct", 16)
    this.customers = new Customers(livemode)
    this.meters = new Meters(livemode)
    this.events = new MeterEvents(livemode, this.meters, this.customers)
    this.sessions = new Sessions(livemode)
  }

  // ---------------------------------------------------------------- customers

  createCustomer(params: FormObject | CustomerParams, nowMs: number): Customer {
    return this.customers.create(params, nowMs)
  }
  /** A live customer, or a deleted stub (Stripe answers retrieve on a deleted customer with it). */
  retrieveCustomer(id: string): Customer | DeletedCustomer {
    return this.customers.retrieve(id)
  }
  liveCustomer(id: string): Customer | undefined {
    return this.customers.live(id)
  }
  /** Returns the updated customer and the fields whose values changed (Stripe's previous_attributes). */
  updateCustomer(id: string, params: FormObject | CustomerParams) {
    return this.customers.update(id, params)
  }
  deleteCustomer(id: string): { readonly deleted: DeletedCustomer; readonly customer: Customer } {
    return this.customers.delete(id)
  }
  listCustomers(params: ListParams & { readonly email?: string | undefined }): Page<Customer> {
    return this.customers.list(params)
  }
  allCustomers(): ReadonlyArray<Customer> {
    return this.customers.all()
  }

  // ---------------------------------------------------------------- meters

  createMeter(params: FormObject | MeterParams, nowMs: number): Meter {
    return this.meters.create(params, nowMs)
  }
  retrieveMeter(id: string): Meter {
    return this.meters.retrieve(id)
  }
  updateMeter(id: string, params: FormObject, nowMs: number): Meter {
    return this.meters.update(id, params, nowMs)
  }
  setMeterStatus(id: string, status: "active" | "inactive", nowMs: number): Meter {
    return this.meters.setStatus(id, status, nowMs)
  }
  listMeters(params: ListParams & { readonly status?: string | undefined }): Page<Meter> {
    return this.meters.list(params)
  }
  allMeters(): ReadonlyArray<Meter> {
    return this.meters.all()
  }
  /** The newest meter (active or not) with this event name, if any. */
  anyMeterByEventName(eventName: string): Meter | undefined {
    return this.meters.anyByEventName(eventName)
  }

  // ---------------------------------------------------------------- meter events

  /** `${meter}|${customer}` a v1 meter event form body is about (best effort, before validation). */
  pairKey(body: FormObject): string | undefined {
    return this.events.pairKey(body)
  }
  /** Logs a valid event as received, accepted or a duplicate (the raw log tests count). */
  recordReceived(r: MeterEventRecord, outcome: ReceivedMeterEvent["outcome"], atMs: number): void {
    this.events.recordReceived(r, outcome, atMs)
  }
  /** Every valid meter event received, duplicates included, in arrival order. */
  received(): ReadonlyArray<ReceivedMeterEvent> {
    return this.events.received()
  }
  /** True when `identifier` was accepted within the last 24 hours. */
  isDuplicate(identifier: string, nowMs: number): boolean {
    return this.events.isDuplicate(identifier, nowMs)
  }
  validateMeterEvent(input: MeterEventInput, nowMs: number, via: "v1" | "v2"): MeterEventRecord {
    return this.events.validate(input, nowMs, via)
  }
  commitMeterEvent(record: MeterEventRecord): void {
    this.events.commit(record)
  }
  toMeterEvent(record: MeterEventRecord): MeterEvent {
    return this.events.toMeterEvent(record)
  }
  recordStreamError(error: StreamEventError): void {
    this.events.recordStreamError(error)
  }
  streamErrors(): ReadonlyArray<StreamEventError> {
    return this.events.streamErrors()
  }
  meterEvents(): ReadonlyArray<MeterEventRecord> {
    return this.events.all()
  }
  totalsList(): ReadonlyArray<Totals> {
    return this.events.totalsList()
  }
  summaries(params: Parameters<MeterEvents["summaries"]>[0]): ReadonlyArray<SummaryBucket> {
    return this.events.summaries(params)
  }
  /** Stream events whose identifier was already accepted within 24 hours. */
  get duplicatesIgnored(): number {
    return this.events.duplicatesIgnored
  }
  set duplicatesIgnored(n: number) {
    this.events.duplicatesIgnored = n
  }

  // ---------------------------------------------------------------- v2 sessions

  createSession(nowMs: number): MeterEventSession {
    return this.sessions.create(nowMs)
  }
  /** "valid", "expired" (known but past its expiry) or "unknown". */
  checkSession(token: string, nowMs: number): "valid" | "expired" | "unknown" {
    return this.sessions.check(token, nowMs)
  }
  /** Fault injection: every session issued so far is expired from now on. */
  expireAllSessions(nowMs: number): number {
    return this.sessions.expireAll(nowMs)
  }
}

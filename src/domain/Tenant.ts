/**
 * The tenant environment a piece of work runs for. Repositories read it from the context, so a
 * query cannot be written without one: the HTTP auth middleware provides it per request, the
 * sync scheduler per tenant, the webhook handler per verified delivery.
 */
import { Context } from "effect"
import type { TenantScope } from "./Ids.js"

export class CurrentTenant extends Context.Tag("flexprice/CurrentTenant")<CurrentTenant, TenantScope>() {}

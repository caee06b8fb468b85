/**
 * The whole HTTP API: every group, and the errors any endpoint may answer with. Feature groups
 * (Stripe config, mappings, sync, migration, webhooks) are added here and nowhere else.
 */
import { HttpApi, OpenApi } from "@effect/platform"
import {
  ConflictResponse,
  InternalErrorResponse,
  InvalidInputResponse,
  NotFoundResponse,
  PayloadTooLargeResponse,
  ServiceUnavailableResponse,
  UpstreamFailedResponse,
  withoutPlatformDecodeError
} from "./ErrorContract.js"
import { CustomersGroup, EventsGroup, HealthGroup, MetersGroup } from "./CoreApi.js"
import { StripeConfigGroup } from "./StripeConfigApi.js"
import { WebhooksGroup } from "./WebhooksApi.js"
import { SyncGroup } from "./SyncApi.js"
import { MigrationGroup } from "./MigrationApi.js"
import { TenantKeysGroup } from "./TenantKeysApi.js"
import { AdminGroup } from "./AdminApi.js"

export class FlexPriceApi extends HttpApi.make("flexprice")
  .add(HealthGroup)
  .add(CustomersGroup)
  .add(MetersGroup)
  .add(EventsGroup)
  .add(StripeConfigGroup)
  .add(WebhooksGroup)
  .add(SyncGroup)
  .add(MigrationGroup)
  .add(TenantKeysGroup)
  .add(AdminGroup)
  .addError(InvalidInputResponse)
  .addError(NotFoundResponse)
  .addError(ConflictResponse)
  .addError(PayloadTooLargeResponse)
  .addError(UpstreamFailedResponse)
  .addError(InternalErrorResponse)
  .addError(ServiceUnavailableResponse)
  .annotate(OpenApi.Title, "FlexPrice Stripe Sync")
  .annotate(OpenApi.Version, "0.1.0")
  .annotate(
    OpenApi.Description,
    "Usage ingestion and exactly-once sync of billable quantities to Stripe Billing meters. Errors are returned as {\"error\":{\"code\",\"message\",\"details\"}}."
  )
  .annotate(OpenApi.Transform, (spec) => withoutPlatformDecodeError(spec)) {}

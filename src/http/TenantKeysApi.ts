/**
 * The caller's own API keys (x-api-key): create another (shown once), list them (never the key
 * itself), revoke one. Rotation is create → switch clients → revoke the old key.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "./Security.js"

export const ApiKeyView = Schema.Struct({
  id: Schema.String,
  key_prefix: Schema.String.annotations({ description: "the first 7 characters, to recognise a key" }),
  created_at: Schema.String,
  revoked_at: Schema.NullOr(Schema.String)
})

export const ApiKeyCreated = Schema.Struct({
  id: Schema.String,
  api_key: Schema.String.annotations({ description: "the key itself: shown in this response only, stored as a SHA-256 hash" }),
  key_prefix: Schema.String,
  created_at: Schema.String
})

export class TenantKeysGroup extends HttpApiGroup.make("tenantKeys")
  .add(
    HttpApiEndpoint.post("create", "/v1/tenant/keys")
      .addSuccess(ApiKeyCreated, { status: 201 })
      .annotate(OpenApi.Description, "Creates another API key for this tenant environment; the response is the only place the key appears.")
  )
  .add(HttpApiEndpoint.get("list", "/v1/tenant/keys").addSuccess(Schema.Struct({ keys: Schema.Array(ApiKeyView) })))
  .add(
    HttpApiEndpoint.del("revoke")`/v1/tenant/keys/${HttpApiSchema.param("id", Schema.String)}`
      .addSuccess(Schema.Struct({ id: Schema.String, revoked: Schema.Literal(true) }))
      .annotate(
        OpenApi.Description,
        "Revokes a key of this environment: it answers 401 from the next request on, on every replica. Idempotent: revoking a key already revoked answers the same 200 and changes nothing (no second audit entry). 409 last_api_key for the environment's last active key (create another first); 404 api_key_not_found for an id not in this environment."
      )
  )
  .middleware(Authentication) {}

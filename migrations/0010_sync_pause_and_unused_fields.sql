-- Issue #12 item 9: a tenant's push pauses on a Stripe authentication failure (401/403, a rolled
-- key's `api_key_expired`) instead of charging an attempt to its batches on every run. The pause
-- holds until the configuration changes (PUT /v1/stripe/config) or a connection test succeeds;
-- GET /v1/stripe/sync/status says why.
ALTER TABLE stripe_tenant_configs ADD COLUMN sync_paused_at timestamptz;
ALTER TABLE stripe_tenant_configs ADD COLUMN sync_paused_code text;
ALTER TABLE stripe_tenant_configs ADD COLUMN sync_paused_message text;

-- Issue #18 item 6: no column that is always empty.
--  * stripe_sync_batches.stripe_event_id: a Stripe meter event has no id of its own; the v1
--    answer carries the `identifier` we sent and the v2 stream answers `{}`
--    (https://docs.stripe.com/api/billing/meter-event/object). The ledger's `identifier` is the
--    event's only Stripe-side key.
--  * stripe_tenant_configs.webhook_config: the webhook settings are columns already
--    (webhook_secret_encrypted) and the endpoint URL is derived from the tenant (GET config).
--  * meter_provider_mappings.configuration: what a mapping is configured with lives in its own
--    columns (stripe_event_name, customer/value payload keys, formula, whole_units, sync_enabled).
ALTER TABLE stripe_sync_batches DROP COLUMN IF EXISTS stripe_event_id;
ALTER TABLE stripe_tenant_configs DROP COLUMN IF EXISTS webhook_config;
ALTER TABLE meter_provider_mappings DROP COLUMN IF EXISTS configuration;

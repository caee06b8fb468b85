-- Stripe's v2 meter event stream answers 200 and reports dropped events later, as the thin event
-- `v1.billing.meter.error_report_triggered` sent to an event destination
-- (src/webhooks/EventDestination.ts). The destination has its own signing secret, stored
-- encrypted like the webhook secret.
ALTER TABLE stripe_tenant_configs ADD COLUMN event_destination_secret_encrypted text;

-- The v2 event that reported a batch dropped. Set while the batch is `failed` because of such a
-- report: the push queue leaves it alone until a mapping fix (or an operator) re-queues it.
ALTER TABLE stripe_sync_batches ADD COLUMN stripe_error_event_id text;
-- How often the batch went back to pending after Stripe lost or dropped it (error report + mapping
-- fix, or reconciliation proving it missing). Reconciliation re-queues a batch once; missing
-- again → failed / needs_review for an operator.
ALTER TABLE stripe_sync_batches ADD COLUMN requeue_count integer NOT NULL DEFAULT 0;

-- Error reports name batches by meter event identifier.
CREATE INDEX stripe_sync_batches_identifier_idx ON stripe_sync_batches (tenant_id, environment_id, identifier);

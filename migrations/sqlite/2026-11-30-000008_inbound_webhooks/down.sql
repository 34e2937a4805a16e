ALTER TABLE sync_configs DROP COLUMN run_on_webhook;
DROP TABLE inbound_webhook_events;
DROP TABLE inbound_webhooks;

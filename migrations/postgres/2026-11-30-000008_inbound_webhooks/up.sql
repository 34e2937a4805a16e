-- Inbound webhooks: providers push events to /hooks/<token>; the token is kept hashed, the
-- signing secret sealed. Accepted events are kept (de-duplicated by the provider's delivery
-- id) and can start syncs.
CREATE TABLE inbound_webhooks (
    integration_id TEXT PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    secret_sealed TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE inbound_webhook_events (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    event_type TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    UNIQUE (integration_id, delivery_id)
);
CREATE INDEX inbound_webhook_events_integration_idx ON inbound_webhook_events (integration_id, id);

ALTER TABLE sync_configs ADD COLUMN run_on_webhook TEXT NOT NULL DEFAULT '[]';

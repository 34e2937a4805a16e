-- OAuth 2.0: a team's apps at providers (client secret sealed), the connection attempts in
-- flight (state hashed, PKCE verifier sealed; single use, 10 minutes), and on each
-- integration connected through an app the token's life cycle (the tokens themselves are
-- the integration's sealed credentials).
CREATE TABLE oauth_apps (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    provider_key TEXT NOT NULL,
    name TEXT NOT NULL,
    grant_type TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret_sealed TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '[]',
    authorize_url TEXT,
    token_url TEXT NOT NULL,
    revoke_url TEXT,
    authorize_params TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (team_id, name)
);
CREATE INDEX oauth_apps_team_idx ON oauth_apps (team_id, id);

CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    verifier_sealed TEXT NOT NULL,
    redirect_after TEXT,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX oauth_states_integration_idx ON oauth_states (integration_id, expires_at);

ALTER TABLE integrations ADD COLUMN oauth_app_id TEXT;
ALTER TABLE integrations ADD COLUMN oauth_status TEXT;
ALTER TABLE integrations ADD COLUMN oauth_scopes TEXT;
ALTER TABLE integrations ADD COLUMN oauth_expires_at TIMESTAMP;
ALTER TABLE integrations ADD COLUMN oauth_refreshed_at TIMESTAMP;
ALTER TABLE integrations ADD COLUMN oauth_error TEXT;
ALTER TABLE integrations ADD COLUMN oauth_generation BIGINT NOT NULL DEFAULT 0;
CREATE INDEX integrations_oauth_app_idx ON integrations (oauth_app_id);
CREATE INDEX integrations_oauth_expiry_idx ON integrations (oauth_expires_at);

ALTER TABLE api_keys ADD COLUMN allowed_project_ids TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_integration_ids TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_limit_period_secs BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_limit_burst BIGINT;
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_key_expires_at TIMESTAMP;
ALTER TABLE api_keys ADD COLUMN updated_at TIMESTAMP;

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    outcome TEXT NOT NULL,
    error_code TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_events_team_idx ON audit_events (team_id, id);

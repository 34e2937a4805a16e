CREATE TABLE request_logs (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    level TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER,
    duration_ms BIGINT NOT NULL,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL,
    error TEXT,
    actor TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX request_logs_integration_idx ON request_logs (integration_id, id);
CREATE INDEX request_logs_project_idx ON request_logs (team_id, project_id, id);
CREATE INDEX request_logs_created_idx ON request_logs (created_at);

CREATE TABLE health_checks (
    id TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    ok BOOLEAN NOT NULL,
    status INTEGER,
    duration_ms BIGINT NOT NULL,
    error TEXT,
    checked_at TIMESTAMP NOT NULL
);
CREATE INDEX health_checks_integration_idx ON health_checks (integration_id, checked_at);

ALTER TABLE integrations ADD COLUMN last_check_at TIMESTAMP;
ALTER TABLE integrations ADD COLUMN last_response_ms BIGINT;
ALTER TABLE integrations ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;

CREATE TABLE request_logs_rowid (
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
INSERT INTO request_logs_rowid (id, team_id, project_id, integration_id, level, method, path, status, duration_ms, bytes_in, bytes_out, error, actor, correlation_id, created_at)
    SELECT id, team_id, project_id, integration_id, level, method, path, status, duration_ms, bytes_in, bytes_out, error, actor, correlation_id, created_at FROM request_logs;
DROP TABLE request_logs;
ALTER TABLE request_logs_rowid RENAME TO request_logs;
CREATE INDEX request_logs_integration_idx ON request_logs (integration_id, id);
CREATE INDEX request_logs_project_idx ON request_logs (team_id, project_id, id);
CREATE INDEX request_logs_created_idx ON request_logs (created_at);

CREATE TABLE audit_events_rowid (
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
INSERT INTO audit_events_rowid (id, team_id, actor, action, target_type, target_id, outcome, error_code, created_at)
    SELECT id, team_id, actor, action, target_type, target_id, outcome, error_code, created_at FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_rowid RENAME TO audit_events;
CREATE INDEX audit_events_team_idx ON audit_events (team_id, id);

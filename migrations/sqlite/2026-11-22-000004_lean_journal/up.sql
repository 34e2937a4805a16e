-- Request logs and audit events are written for every call, and every b-tree a row goes into
-- costs the commit a page. Both tables are now keyed by their time-ordered ids alone (WITHOUT
-- ROWID: no second tree for the rowid), and request_logs_created_idx is gone: pruning by age
-- goes by the ids (UUIDv7, which sort by creation time).
CREATE TABLE request_logs_lean (
    id TEXT NOT NULL PRIMARY KEY,
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
) WITHOUT ROWID;
INSERT INTO request_logs_lean (id, team_id, project_id, integration_id, level, method, path, status, duration_ms, bytes_in, bytes_out, error, actor, correlation_id, created_at)
    SELECT id, team_id, project_id, integration_id, level, method, path, status, duration_ms, bytes_in, bytes_out, error, actor, correlation_id, created_at FROM request_logs;
DROP TABLE request_logs;
ALTER TABLE request_logs_lean RENAME TO request_logs;
CREATE INDEX request_logs_integration_idx ON request_logs (integration_id, id);
CREATE INDEX request_logs_project_idx ON request_logs (team_id, project_id, id);

CREATE TABLE audit_events_lean (
    id TEXT NOT NULL PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    outcome TEXT NOT NULL,
    error_code TEXT,
    created_at TIMESTAMP NOT NULL
) WITHOUT ROWID;
INSERT INTO audit_events_lean (id, team_id, actor, action, target_type, target_id, outcome, error_code, created_at)
    SELECT id, team_id, actor, action, target_type, target_id, outcome, error_code, created_at FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_lean RENAME TO audit_events;
CREATE INDEX audit_events_team_idx ON audit_events (team_id, id);

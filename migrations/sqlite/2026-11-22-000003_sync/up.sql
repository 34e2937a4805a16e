CREATE TABLE sync_configs (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    source_integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    target_integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    direction TEXT NOT NULL,
    spec TEXT NOT NULL,
    schedule_secs BIGINT,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    last_run_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX sync_configs_team_idx ON sync_configs (team_id, project_id, id);

CREATE TABLE sync_runs (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    config_id TEXT NOT NULL REFERENCES sync_configs (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    records_read BIGINT NOT NULL DEFAULT 0,
    records_written BIGINT NOT NULL DEFAULT 0,
    records_skipped BIGINT NOT NULL DEFAULT 0,
    records_failed BIGINT NOT NULL DEFAULT 0,
    error_samples TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX sync_runs_config_idx ON sync_runs (config_id, id);
CREATE INDEX sync_runs_status_idx ON sync_runs (status);

CREATE TABLE sync_records (
    config_id TEXT NOT NULL REFERENCES sync_configs (id) ON DELETE CASCADE,
    record_key TEXT NOT NULL,
    source_fp TEXT,
    target_fp TEXT,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (config_id, record_key)
);

-- Custom integration templates: a team's description of an API (schemas, auth, base URL,
-- health check, named endpoints), in immutable versions; integrations pin the version they
-- were registered with. Public templates are listed in every team's marketplace.
CREATE TABLE integration_templates (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    template_key TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL,
    visibility TEXT NOT NULL DEFAULT 'team',
    latest_version INTEGER NOT NULL,
    install_count BIGINT NOT NULL DEFAULT 0,
    installed_from TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (team_id, template_key)
);
CREATE INDEX integration_templates_public_idx ON integration_templates (visibility, id);

CREATE TABLE integration_template_versions (
    template_id TEXT NOT NULL REFERENCES integration_templates (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (template_id, version)
);

ALTER TABLE integrations ADD COLUMN template_id TEXT;
ALTER TABLE integrations ADD COLUMN template_version INTEGER;
CREATE INDEX integrations_template_idx ON integrations (template_id);

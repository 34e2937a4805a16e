-- Each team's data version: bumped in the same transaction as every change to its projects
-- and integrations, by whoever makes it (the hub, the CLI, an operator's SQL). A query answer
-- kept by the hub (`graphql::answers`) is served again only while the version it was computed
-- under is still the team's. A migration that rebuilds one of these tables must recreate its
-- triggers.
CREATE TABLE data_versions (
    team_id TEXT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER projects_version_insert AFTER INSERT ON projects BEGIN
    INSERT INTO data_versions (team_id, version) VALUES (NEW.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER projects_version_update AFTER UPDATE ON projects BEGIN
    INSERT INTO data_versions (team_id, version) VALUES (OLD.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
    INSERT INTO data_versions (team_id, version) VALUES (NEW.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER projects_version_delete AFTER DELETE ON projects BEGIN
    INSERT INTO data_versions (team_id, version) VALUES (OLD.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER integrations_version_insert AFTER INSERT ON integrations BEGIN
    INSERT INTO data_versions (team_id, version) VALUES (NEW.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER integrations_version_update AFTER UPDATE ON integrations BEGIN
    INSERT INTO data_versions (team_id, version) VALUES (OLD.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
    INSERT INTO data_versions (team_id, version) VALUES (NEW.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER integrations_version_delete AFTER DELETE ON integrations BEGIN
    INSERT INTO data_versions (team_id, version) VALUES (OLD.team_id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = version + 1;
END;

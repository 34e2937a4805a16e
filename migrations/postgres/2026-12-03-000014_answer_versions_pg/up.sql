-- Each team's data version on PostgreSQL too (see the SQLite migration 000013): bumped in the
-- same transaction as every insert, update and delete of its projects and integrations, by
-- whoever makes it (any replica, the CLI, an operator's SQL). The hub keeps a query's answer
-- only while its team's version is unchanged (`graphql::answers`).
--
-- The triggers are deferred constraint triggers: the counter row is written at commit, after
-- every other row the transaction writes, and held only while the commit completes. Two
-- writers of one team wait on each other only for that moment, and never in a cycle (the
-- counter is always the last row a transaction locks).
CREATE FUNCTION hub_bump_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO data_versions (team_id, version) VALUES (OLD.team_id, 1)
            ON CONFLICT (team_id) DO UPDATE SET version = data_versions.version + 1;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.team_id IS DISTINCT FROM OLD.team_id) THEN
        INSERT INTO data_versions (team_id, version) VALUES (NEW.team_id, 1)
            ON CONFLICT (team_id) DO UPDATE SET version = data_versions.version + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER projects_version AFTER INSERT OR UPDATE OR DELETE ON projects
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hub_bump_data_version();
CREATE CONSTRAINT TRIGGER integrations_version AFTER INSERT OR UPDATE OR DELETE ON integrations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hub_bump_data_version();

-- Teams that already have data start with a version; a version never goes back, so an
-- answer kept under an earlier one is never served again.
INSERT INTO data_versions (team_id, version)
    SELECT DISTINCT team_id, 1 FROM projects
    ON CONFLICT (team_id) DO UPDATE SET version = data_versions.version + 1;

-- The same table as on SQLite, so both backends have the same tables. The hub keeps query
-- answers on SQLite only (`graphql::answers`): on PostgreSQL, replicas would ask the database
-- for the version on every read (the round trip the answer saves), and a counter row per team
-- bumped by triggers would make a team's writers wait on each other. No trigger writes here.
CREATE TABLE data_versions (
    team_id TEXT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
);

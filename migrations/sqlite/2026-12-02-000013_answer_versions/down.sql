DROP TRIGGER integrations_version_delete;
DROP TRIGGER integrations_version_update;
DROP TRIGGER integrations_version_insert;
DROP TRIGGER projects_version_delete;
DROP TRIGGER projects_version_update;
DROP TRIGGER projects_version_insert;
DROP TABLE data_versions;

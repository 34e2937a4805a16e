DROP TRIGGER integrations_version ON integrations;
DROP TRIGGER projects_version ON projects;
DROP FUNCTION hub_bump_data_version();

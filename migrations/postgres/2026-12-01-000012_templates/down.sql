DROP INDEX integrations_template_idx;
ALTER TABLE integrations DROP COLUMN template_version;
ALTER TABLE integrations DROP COLUMN template_id;
DROP TABLE integration_template_versions;
DROP TABLE integration_templates;

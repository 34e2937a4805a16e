DROP TABLE audit_events;
ALTER TABLE api_keys DROP COLUMN updated_at;
ALTER TABLE api_keys DROP COLUMN previous_key_expires_at;
ALTER TABLE api_keys DROP COLUMN previous_key_hash;
ALTER TABLE api_keys DROP COLUMN rate_limit_burst;
ALTER TABLE api_keys DROP COLUMN rate_limit_period_secs;
ALTER TABLE api_keys DROP COLUMN rate_limit_requests;
ALTER TABLE api_keys DROP COLUMN allowed_integration_ids;
ALTER TABLE api_keys DROP COLUMN allowed_project_ids;

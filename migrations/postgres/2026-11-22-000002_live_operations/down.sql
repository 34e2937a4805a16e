ALTER TABLE integrations DROP COLUMN consecutive_failures;
ALTER TABLE integrations DROP COLUMN last_response_ms;
ALTER TABLE integrations DROP COLUMN last_check_at;
DROP TABLE health_checks;
DROP TABLE request_logs;

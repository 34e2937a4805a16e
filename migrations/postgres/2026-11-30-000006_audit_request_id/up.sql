-- The id of the HTTP request (X-Request-Id) that made the audited mutation.
ALTER TABLE audit_events ADD COLUMN request_id TEXT;

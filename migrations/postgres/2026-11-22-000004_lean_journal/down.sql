CREATE INDEX request_logs_created_idx ON request_logs (created_at);

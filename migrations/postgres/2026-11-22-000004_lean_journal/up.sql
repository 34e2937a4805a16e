-- Every call writes a request log, and every index costs each write; pruning by age goes by
-- the time-ordered ids (UUIDv7) instead of an index on created_at.
DROP INDEX request_logs_created_idx;

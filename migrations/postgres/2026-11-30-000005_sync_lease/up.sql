-- A running sync run renews this; a run whose heartbeat is older than HUB_JOB_LEASE_SECS
-- is marked interrupted (its process stopped, or lost the database).
ALTER TABLE sync_runs ADD COLUMN heartbeat_at TIMESTAMP;

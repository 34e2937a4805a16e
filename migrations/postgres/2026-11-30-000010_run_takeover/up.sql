-- How many replicas have run a sync run: a run whose replica stopped (kill -9, a lost
-- host) is taken over by another once its lease runs out, up to a bound.
ALTER TABLE sync_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;

-- Periodic work one replica at a time (log pruning): the holder renews `expires_at`; once it
-- has passed, any replica may claim the job.
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

DROP TABLE job_leases;
ALTER TABLE sync_runs DROP COLUMN attempts;

-- At most one queued or running run per sync config, enforced by the database: two replicas
-- (or two requests on one) that both found no active run cannot both insert one. Runs left
-- active twice by earlier versions are closed first, keeping the newest (ids are UUIDv7,
-- time-ordered).
UPDATE sync_runs
SET status = 'interrupted',
    error = 'closed by a migration: another run of this sync was active at the same time'
WHERE status IN ('queued', 'running')
  AND id NOT IN (
    SELECT MAX(id) FROM sync_runs WHERE status IN ('queued', 'running') GROUP BY config_id
  );
CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (config_id)
WHERE status IN ('queued', 'running');

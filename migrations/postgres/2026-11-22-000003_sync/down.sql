DROP TABLE sync_records;
DROP TABLE sync_runs;
DROP TABLE sync_configs;

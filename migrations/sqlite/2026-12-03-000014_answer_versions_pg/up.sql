-- PostgreSQL gets the data-version triggers SQLite has had since 000013; nothing changes here
-- (both sets hold the same migrations).
SELECT 1;

-- Put the restored database :"new" in the place of :"live" (which becomes :"old", then is dropped),
-- run by psql (-v live=... new=... old=... force=...) in a maintenance database. No one can
-- connect to the live database from the first statement on (ALLOW_CONNECTIONS false, committed at
-- once), its sessions are ended, and both renames commit in one transaction: a client sees the old
-- database, then "does not allow connections" for the moment the renames take (RENAME waits up to
-- 5 s for ended sessions to go), then the new one; the name is never missing. When the
-- transaction fails nothing was renamed, and connections to the live database are allowed again.
-- Prints "memstack-ops-swapped t" (then "memstack-ops-dropped t" once the old one is gone) or "... f".
ALTER DATABASE :"live" WITH ALLOW_CONNECTIONS false;
SELECT count(pg_terminate_backend(pid)) > -1 AS ended FROM pg_stat_activity
WHERE datname IN (:'live', :'new') AND pid <> pg_backend_pid() \gset
BEGIN;
ALTER DATABASE :"live" RENAME TO :"old";
ALTER DATABASE :"new" RENAME TO :"live";
COMMIT;
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'old') AS swapped \gset
\echo memstack-ops-swapped :swapped
\if :swapped
SELECT clock_timestamp() AS t0 \gset
DROP DATABASE :"old" :force;
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'old') AS dropped,
       round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 2) AS seconds \gset
\echo memstack-ops-dropped :dropped
\echo memstack-ops-drop-seconds :seconds
\else
ALTER DATABASE :"live" WITH ALLOW_CONNECTIONS true;
\endif

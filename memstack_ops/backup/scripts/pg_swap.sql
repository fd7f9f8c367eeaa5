-- Put the restored database :"new" in the place of :"live" (which becomes :"old"), run by psql
-- (-v live=... new=... old=...) in a maintenance database. No one can connect to the live
-- database from the first statement on (ALLOW_CONNECTIONS false, committed at once), its
-- sessions are ended, and both renames commit in one transaction: a client sees the old database,
-- then "does not allow connections" for the moment the renames take (RENAME waits up to 5 s for
-- ended sessions to go), then the new one; the name is never missing. When the transaction
-- fails, nothing was renamed and the engine allows connections again.
ALTER DATABASE :"live" WITH ALLOW_CONNECTIONS false;
SELECT count(pg_terminate_backend(pid)) AS ended FROM pg_stat_activity
WHERE datname IN (:'live', :'new') AND pid <> pg_backend_pid();
BEGIN;
ALTER DATABASE :"live" RENAME TO :"old";
ALTER DATABASE :"new" RENAME TO :"live";
COMMIT;

# pg_dump in the snapshot of a transaction that also counts every table's rows and samples it
# (concurrently with the dump): both match the dump exactly, for the restore test and drill to compare.
# Runs after the engine's prelude, which connects as $1 to the database $2 (PGUSER, PGDATABASE).
# $3 the row-count and sample SQL (pg_count.sql, pg_sample.sql), then pg_dump's own flags. Counts,
# samples and notes go to stderr as memstack-ops-count|/-sample|/-note: lines.
trap '' PIPE
sql=$3; shift 3
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/in" || exit 1
psql -X -q -At -F '|' < "$tmp/in" > "$tmp/out" 2> "$tmp/err" &
pid=$!
exec 3> "$tmp/in"
printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;" "SELECT 'snapshot|' || pg_export_snapshot();" >&3
i=0; snap=
while [ "$i" -lt 1200 ]; do
  snap=$(sed -n 's/^snapshot|//p' "$tmp/out")
  [ -n "$snap" ] && break
  [ -s "$tmp/err" ] && break
  kill -0 "$pid" 2>/dev/null || break
  i=$((i+1)); sleep 0.05
done
if [ -z "$snap" ]; then
  exec 3>&-; wait "$pid"
  echo "memstack-ops-note: no exported snapshot ($(head -c 300 "$tmp/err")); dumped without row counts" >&2
  pg_dump "$@"; exit $?
fi
printf '%s\n' '\set ON_ERROR_ROLLBACK on' "$sql" >&3
pg_dump --snapshot="$snap" "$@"
rc=$?
printf '%s\n' "COMMIT;" >&3
exec 3>&-
wait "$pid"
if [ -s "$tmp/err" ]; then echo "memstack-ops-note: counting rows failed: $(head -c 300 "$tmp/err")" >&2
else sed -n 's/^count|/memstack-ops-count|/p; s/^sample|/memstack-ops-sample|/p' "$tmp/out" >&2; fi
exit $rc

# The exact restore's first step, after the engine's prelude (which sets PGUSER to $1 and
# PGDATABASE to $2, a maintenance database): create the database $4 like the live one $3
# (pg_create_like.sql, $6), restore the dump (on stdin) into it with pg_restore -j, and count its
# rows (pg_count.sql, $7; "count|table|n" lines on stdout). The live database is only read.
# pg_restore -j reads its pieces by seeking, which a pipe cannot do: the dump goes to a temporary
# file first (while the database is created). $5: the number of jobs, or "" for the container's
# CPU count (at least 2). The sessions commit without waiting for the WAL flush
# (synchronous_commit=off): the copy is used only after the swap, whose own commit flushes all
# WAL written before it, so nothing a crash could lose ever becomes live.
live=$3; new=$4; n=$5; create=$6; count=$7
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
printf '%s\n' "$create" | psql -X -q -At -v ON_ERROR_STOP=1 -v live="$live" -v new="$new" -f - > "$tmp/create" 2>&1 &
pid=$!
if ! cat > "$tmp/dump"; then
  wait "$pid"
  echo "memstack-ops-note: could not write the dump to $tmp in the container (disk full?)" >&2
  exit 1
fi
if ! wait "$pid"; then
  echo "memstack-ops-note: creating the database $new failed: $(head -c 600 "$tmp/create")" >&2
  exit 1
fi
[ -n "$n" ] || n=$(nproc 2>/dev/null) || n=2
[ "$n" -ge 2 ] 2>/dev/null || n=2
PGDATABASE=$new; PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=off"; export PGDATABASE PGOPTIONS
pg_restore --exit-on-error -j "$n" -d "" "$tmp/dump" || exit $?
echo "memstack-ops-note: pg_restore -j $n" >&2
exec psql -X -At -c "$count"

# Parallel restore into a new, empty database, after the engine's prelude, which connects as $1
# to the database $2 (PGUSER, PGDATABASE): the one being restored into, never the live one.
# The dump on stdin goes to a temporary file first, because pg_restore -j reads its pieces by
# seeking (a pipe cannot be read in parallel). $3: the number of jobs, or "" for the container's
# CPU count (at least 2). Each session commits without waiting for the WAL flush
# (synchronous_commit=off): the copy is used only after the swap, whose own commit flushes
# everything written before it, so nothing that a later crash could lose is ever live.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
if ! cat > "$tmp/dump"; then
  echo "memstack-ops-note: could not write the dump to $tmp in the container (disk full?)" >&2
  exit 1
fi
n=$3
[ -n "$n" ] || n=$(nproc 2>/dev/null) || n=2
[ "$n" -ge 2 ] 2>/dev/null || n=2
PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=off"; export PGOPTIONS
echo "memstack-ops-note: pg_restore -j $n" >&2
pg_restore --exit-on-error -j "$n" -d "" "$tmp/dump"

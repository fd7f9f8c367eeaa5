# Apply a roles file (pg_dumpall --globals-only, on stdin) with psql, after the engine's prelude,
# which connects as $1 to the database $2 (PGUSER, PGDATABASE).
#
# psql runs backslash meta-commands wherever they stand in its input: "\! cmd" is a shell (as the
# postgres user, in this container). PostgreSQL 17.6/16.10/15.14+ protect their plain dumps with
# psql's restricted mode (a "\restrict KEY" ... "\unrestrict KEY" pair around the SQL, for
# CVE-2025-8714), which an older psql lacks and which a forged file simply leaves out. pg_dumpall's
# globals hold no other backslash: so drop exactly that pair and refuse the file when any other
# backslash is left, before psql sees a byte of it.
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
sed -e '/^\\restrict [A-Za-z0-9]*$/d' -e '/^\\unrestrict [A-Za-z0-9]*$/d' > "$tmp" || exit 1
line=$(grep -n -m 1 -F -e "\\" "$tmp" | cut -d: -f1)
if [ -n "$line" ]; then
  echo "memstack-ops-refused: line $line of the roles file holds a backslash (psql would run it as a meta-command)" >&2
  exit 3
fi
psql -X -q -f "$tmp"

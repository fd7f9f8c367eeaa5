# The exact restore's first step, after the engine's prelude (which sets PGUSER to $1 and
# PGDATABASE to $2, a maintenance database): create the database $4 like the live one $3
# (pg_create_like.sql, $6), restore the dump (on stdin) into it, and count its rows
# (pg_count.sql, $7: "count|table|n" lines on stdout). The live database is only read.
#
# In parallel, over $5 sessions ("" for the container's CPU count, at least 2):
# - with $10 (a byte count), the dump's first $10 bytes come ahead of the whole dump: unpacked,
#   they hold the table of contents, which is all that pre-data, the sequence values and
#   post-data need. Then the rows are read straight from the stream and nothing is written to a
#   file. Where those bytes do not hold the whole table of contents, or the dump has large objects
#   (their data is in the stream), or the container's tools cannot do this:
# - the dump goes to a temporary file (while the database is created); the table of contents,
#   pre-data and the rows read it as it is written (below), the rest needs the whole file;
# - pre-data (tables, types, functions) with one pg_restore;
# - the rows of every table split over the sessions: pg_restore writes the table data as COPY
#   text (one row per line), an awk deals the rows out in turn to one psql per session, each in
#   its own COPY of the same table. pg_restore -j alone loads each table in one session, which
#   leaves the cores idle on the big table that takes most of the time. Only pg_restore's own
#   lines of known shape reach those psql: its SET lines, each table's COPY line (no backslash in
#   either, so no psql meta-command), its \restrict pair, and the rows inside COPY (which psql
#   never reads as commands); any other line stops the load (exit 3), and the engine falls back
#   to a plain pg_restore -j. The rest of the data (sequence values, large objects) goes by
#   pg_restore straight to the server;
# - post-data (indexes, constraints, triggers) with pg_restore -j, one index per session.
# The sessions commit without waiting for the WAL flush (synchronous_commit=off): the copy is used
# only after the swap, whose own commit flushes all WAL written before it, so nothing a crash could
# lose ever becomes live. $8 "direct": pg_restore -j for everything (the fallback).
# In the database's own container PID 1 is the postmaster, which takes every orphaned process as
# its own child and, when one ends other than with exit 0 or 1 (a signal, psql's exit 2 or 3),
# treats it as a crashed backend and restarts the whole server. So no process here may outlive
# its parent: every command is a direct child of this shell, which waits for it; the Ctrl-C
# marker (MEMSTACK_OPS_RUN, which the tool's interrupt handling finds processes by) is taken out
# of the children's environment, so that only this shell gets the tool's signals, and on one it
# stops its children (SIGTERM) and waits for them before it exits. pg_restore -j's own workers,
# which outlive their leader on SIGTERM, end with exit 1, which the postmaster ignores.
unset MEMSTACK_OPS_RUN
live=$3; new=$4; n=$5; create=$6; count=$7; mode=${8:-}
# $9: the decompressor of the dump's stream compression when the container has it ("zstd -dc"),
# so the compressed stream is what crosses docker exec; "" when the dump arrives as pg_dump wrote it
unpack=${9:-}
headlen=${10:-}
kids=
stop() {
  trap '' INT TERM HUP
  # shellcheck disable=SC2086  # a list of pids
  [ -z "$kids" ] || kill -s TERM $kids 2>/dev/null
  wait
  exit 130
}
trap stop INT TERM HUP
# a child this shell can stop and wait for (an asynchronous command reads /dev/null unless its own
# redirection says otherwise: the two that read stdin are started by hand)
run() { "$@" & kid=$!; kids="$kids $kid"; wait "$kid"; }
# the same, reading the file $1 on stdin (pg_restore opens a named file twice: not a fifo)
run_in() { f=$1; shift; "$@" < "$f" & kid=$!; kids="$kids $kid"; wait "$kid"; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
# stop the children and leave with $1; say so when writing the dump failed (the writer's own
# failure, not the TERM sent here: 143)
fail() {
  trap '' INT TERM HUP
  # shellcheck disable=SC2086  # a list of pids
  [ -z "$kids" ] || kill -s TERM $kids 2>/dev/null
  if [ -n "$writer" ]; then
    wait "$writer"; w=$?
    [ "$w" = 0 ] || [ "$w" = 143 ] || [ "$w" = 141 ] || echo "$unwritten" >&2
  fi
  wait
  exit "$1"
}
unwritten="memstack-ops-note: could not unpack or write the dump into $tmp in the container (a damaged stream, or the disk full?)"
printf '%s\n' "$create" > "$tmp/create.sql" || exit 1
psql -X -q -At -v ON_ERROR_STOP=1 -v live="$live" -v new="$new" -f "$tmp/create.sql" > "$tmp/create" 2>&1 &
pid=$!; kids="$kids $pid"
d=$tmp/dump
exec 3<&0  # the dump (an asynchronous command reads /dev/null unless its own redirection says otherwise)
streamed=
if [ -n "$headlen" ]; then
  # exactly $headlen bytes (GNU head reads no further), into a file first: whatever the unpacking
  # does, the head is read from the stream to its last byte, so the whole dump that follows starts
  # where it should. A cut compressed stream unpacks as far as it goes and then fails, which is
  # expected here. At most 64 MiB of it are kept (a table of contents is far smaller; highly
  # compressible rows unpack to ninety times their size or more).
  if [ -n "$unpack" ]; then
    head -c "$headlen" <&3 > "$tmp/head.packed" || { echo "$unwritten" >&2; fail 1; }
    # shellcheck disable=SC2086  # a command and its flags
    $unpack < "$tmp/head.packed" 2> /dev/null | head -c 67108864 > "$tmp/head"
    rm -f "$tmp/head.packed"
  else
    head -c "$headlen" <&3 > "$tmp/head" || { echo "$unwritten" >&2; fail 1; }
  fi
  if [ "$mode" != direct ] && command -v awk > /dev/null && pg_restore -l "$tmp/head" > "$tmp/toc" 2> /dev/null &&
      ! grep -q -E '^[0-9]+; [0-9]+ [0-9]+ (BLOBS|BLOB DATA) ' "$tmp/toc"; then
    streamed=1
  fi
fi
writer=
write_to() {  # the dump (unpacked) into $1, by a child of its own: $writer
  if [ -n "$unpack" ]; then
    # shellcheck disable=SC2086  # a command and its flags
    $unpack <&3 > "$1" &
  else
    cat <&3 > "$1" &
  fi
  writer=$!; kids="$kids $writer"
}
if [ -n "$streamed" ]; then
  d=$tmp/head
  unwritten="memstack-ops-note: could not unpack or write the dump in the container (a damaged stream?)"
else
  : > "$d" || exit 1  # there before the writer starts, for the tails below
  write_to "$d"
  exec 3<&-
fi
# From here on the dump is read while it is still being written, where the container's tail can
# follow a file until its writer ends (GNU tail --pid): the table of contents, pre-data and the
# rows each read it through a fifo that a tail fills, so the restore starts at the first bytes
# instead of after the last. pg_restore reads such input in order, which is the order pg_dump
# wrote (the rows' list is in that order). The rest (other data, post-data with -j) needs to seek,
# so it waits for the whole file. Without such a tail, everything waits for the whole file.
follow=
tail -c +1 --pid="$$" /dev/null > /dev/null 2>&1 && follow=1
written() {  # wait for the whole file (once)
  [ -n "$writer" ] || return 0
  wait "$writer"; w=$?; writer=
  [ "$w" = 0 ] || { echo "$unwritten" >&2; fail 1; }
}
feeds=0
# the dump for one pg_restore, in $src: a fifo a tail fills while the file is written, or the file
src() {
  if [ -n "$follow" ]; then
    feeds=$((feeds + 1)); src=$tmp/feed$feeds
    mkfifo "$src" || fail 1
    tail -c +1 -s 0.2 --pid="$writer" -f "$d" > "$src" 2> /dev/null &
    kids="$kids $!"
  else
    written; src=$d
  fi
}
if ! wait "$pid"; then
  echo "memstack-ops-note: creating the database $new failed: $(head -c 600 "$tmp/create")" >&2
  fail 1
fi
[ -n "$n" ] || n=$(nproc 2>/dev/null) || n=2
[ "$n" -ge 2 ] 2>/dev/null || n=2
PGDATABASE=$new; PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=off"; export PGDATABASE PGOPTIONS
if [ "$mode" = direct ] || ! command -v awk >/dev/null; then
  written
  run pg_restore --exit-on-error -j "$n" -d "" "$d" || fail $?
  echo "memstack-ops-note: pg_restore -j $n" >&2
  run psql -X -At -c "$count" || fail $?
  wait; exit 0
fi
if [ -n "$streamed" ]; then
  run pg_restore --exit-on-error --section=pre-data -d "" "$d" || fail $?
else
  src; run_in "$src" pg_restore -l > "$tmp/toc" || fail 1
  src; run_in "$src" pg_restore --exit-on-error --section=pre-data -d "" || fail $?
fi
grep -E '^[0-9]+; [0-9]+ [0-9]+ TABLE DATA ' "$tmp/toc" > "$tmp/rows.list"
grep -v -E '^[0-9]+; [0-9]+ [0-9]+ TABLE DATA ' "$tmp/toc" > "$tmp/other.list"
mkdir "$tmp/p" || fail 1
i=0; sessions=
while [ "$i" -lt "$n" ]; do
  mkfifo "$tmp/p/$i" || fail 1
  # the shell opens the fifo before psql runs: a psql that fails to connect still leaves a reader,
  # so the awk never blocks opening its end (it gets SIGPIPE and stops instead)
  psql -X -q -v ON_ERROR_STOP=1 -f - < "$tmp/p/$i" > /dev/null 2> "$tmp/p/$i.err" &
  sessions="$sessions $!"; i=$((i+1))
done
kids="$kids $sessions"
N=$n P=$tmp/p; export N P
# both commands of a pipeline are children of this shell; pg_restore's errors go to a file (its
# exit status is not at hand here), and rows lost to one would also show in the row counts
if [ -n "$streamed" ]; then
  # the rows straight from the stream (the rest of it: the whole dump), through a fifo so that the
  # unpacking is a child of its own whose failure is seen
  src=$tmp/rows
  mkfifo "$src" || fail 1
  write_to "$src"
else
  src
fi
pg_restore --section=data -L "$tmp/rows.list" -f - < "$src" 2> "$tmp/rows.err" | awk '
  function all(s,   i) { for (i = 0; i < N; i++) print s > (P "/" i) }
  BEGIN { N = ENVIRON["N"] + 0; P = ENVIRON["P"]; for (i = 0; i < N; i++) printf "" > (P "/" i) }
  incopy { if ($0 == "\\.") { all($0); incopy = 0 } else { print > (P "/" k); k = (k + 1) % N }; next }
  /^--/ || /^$/ { next }
  /^\\(un)?restrict [A-Za-z0-9]+$/ { all($0); next }
  /^SET [a-z_]+ = [^\\;]*;$/ || $0 == "SELECT pg_catalog.set_config('"'"'search_path'"'"', '"'"''"'"', false);" { all($0); next }
  /^COPY [^\\]* FROM stdin;$/ { all($0); incopy = 1; k = 0; next }
  { print "memstack-ops-fallback: line " NR " of the data is not of a known shape" > "/dev/stderr"; exit 3 }' &
kid=$!; kids="$kids $kid"
wait "$kid"; rc=$?
failed=0
for p in $sessions; do wait "$p" || failed=1; done
[ "$rc" = 3 ] && fail 3
if [ "$rc" != 0 ] || [ -s "$tmp/rows.err" ] || [ "$failed" = 1 ]; then
  cat "$tmp/rows.err" "$tmp"/p/*.err >&2
  echo "memstack-ops-note: loading the rows failed (exit $rc)" >&2
  fail 1
fi
if [ -n "$streamed" ]; then
  # pg_restore stops reading after the last rows it was asked for: the unpacking may have ended on
  # SIGPIPE (141) with nothing the restore needs left in the stream (the row counts below check
  # that). The rest of stdin is read to its end, so that the sender is not cut off either.
  wait "$writer"; w=$?; writer=
  [ "$w" = 0 ] || [ "$w" = 141 ] || { echo "$unwritten" >&2; fail 1; }
  cat <&3 > /dev/null || fail 1
  exec 3<&-
fi
written
wait  # pg_restore and the tails too: a child left to the postmaster must not end by a signal
# The rows go to disk while the indexes are built: the swap's DROP DATABASE forces a checkpoint,
# which then finds little left to write. Best effort (a role without the right skips it).
psql -X -q -c CHECKPOINT > /dev/null 2>&1 &
flush=$!; kids="$kids $flush"
run pg_restore --exit-on-error --section=data -L "$tmp/other.list" -d "" "$d" || fail $?
run pg_restore --exit-on-error --section=post-data -j "$n" -d "" "$d" || fail $?
echo "memstack-ops-note: rows over $n sessions${streamed:+ straight from the stream}, post-data with pg_restore -j $n" >&2
run psql -X -At -c "$count" || fail $?
wait "$flush" || :  # best effort, see above

# In a one-off container on the service's volume, the service stopped: put the backup's RDB in
# place of the current data. With appendonly on, Redis 7 would load only appendonlydir/ and
# ignore dump.rdb, so a server on a unix socket loads the RDB and rewrites the AOF from it.
# The backup's tar on stdin. $1 data dir, $2 the server's dbfilename, $3 the RDB's name in the
# tar, $4 appendonly (yes | no | unknown), $5 appenddirname. Prints "restored" at the end.
set -eu
D=$1; DBF=$2; SRC=$3; AOF=$4; ADIR=$5
# the RDB's name comes from the backup's manifest: a plain file name, nothing that leaves $work/new
case "$SRC" in ''|.|..|*/*) echo "the backup names its RDB '$SRC': not a plain file name" >&2; exit 2;; esac
owner=$(stat -c %u:%g "$D")
work="$D/.memstack-restore"
rm -rf "$work"; mkdir -p "$work/new" "$work/old"
tar -C "$work/new" -xf -
test -s "$work/new/$SRC" || { echo "the backup holds no $SRC" >&2; exit 3; }
redis-check-rdb "$work/new/$SRC" >/dev/null || { echo "redis-check-rdb rejects the backup's RDB" >&2; exit 4; }
rollback() {
  rm -rf "$D/${DBF:?}" "$D/${ADIR:?}"
  [ -e "$work/old/$DBF" ] && mv "$work/old/$DBF" "$D/$DBF"
  [ -e "$work/old/$ADIR" ] && mv "$work/old/$ADIR" "$D/$ADIR"
  chown -R "$owner" "$D"; rm -rf "$work"
}
on_exit() {
  rc=$?
  [ "$rc" = 0 ] || { echo "restore failed: the previous data was put back" >&2; rollback; }
}
trap on_exit EXIT
[ -e "$D/$DBF" ] && mv "$D/$DBF" "$work/old/"
[ -e "$D/$ADIR" ] && mv "$D/$ADIR" "$work/old/"
mv "$work/new/$SRC" "$D/$DBF"
# appendonly on (or unknown, CONFIG being disabled, while an AOF directory was there): rebuild it
if [ "$AOF" = yes ] || { [ "$AOF" != no ] && [ -e "$work/old/$ADIR" ]; }; then
  redis-server --dir "$D" --dbfilename "$DBF" --appendonly no --appenddirname "$ADIR" --port 0 \
    --unixsocket /tmp/memstack-restore.sock --save '' >/tmp/memstack-restore.log 2>&1 &
  pid=$!
  c() { redis-cli -s /tmp/memstack-restore.sock "$@"; }
  i=0; until [ "$(c ping 2>/dev/null)" = PONG ]; do
    i=$((i+1)); { [ $i -lt 3000 ] && kill -0 $pid 2>/dev/null; } || { cat /tmp/memstack-restore.log >&2; exit 5; }; sleep 0.1; done
  keys=$(c dbsize)
  c config set appendonly yes >/dev/null
  i=0
  while :; do
    p=$(c info persistence | tr -d '\r')
    case "$p" in *aof_rewrite_in_progress:0*) case "$p" in *aof_rewrite_scheduled:0*) case "$p" in *aof_rewrites:0*) ;; *) break;; esac;; esac;; esac
    i=$((i+1)); [ $i -lt 6000 ] || { echo "the AOF rewrite did not finish" >&2; exit 6; }; sleep 0.1
  done
  case "$p" in *aof_last_bgrewrite_status:ok*) ;; *) echo "the AOF rewrite failed" >&2; exit 7;; esac
  c shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
  echo "keys=$keys"
fi
chown -R "$owner" "$D"
rm -rf "$work"
trap - EXIT
echo restored

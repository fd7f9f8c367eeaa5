# Restore test: load the backup's RDB (its tar on stdin) into a scratch redis-server on a unix
# socket in a temporary directory, print "dbsize=N" (the keys it loaded) and shut it down.
# $1: the RDB's name in the tar.
set -e
case "$1" in ''|.|..|*/*) echo "the backup names its RDB '$1': not a plain file name" >&2; exit 2;; esac
d=$(mktemp -d); tar -C "$d" -xf -; cd "$d"
redis-server --dir "$d" --dbfilename "$1" --appendonly no --port 0 --unixsocket "$d/s" --save '' >"$d/log" 2>&1 &
pid=$!
set +e
i=0; until [ "$(redis-cli -s "$d/s" ping 2>/dev/null)" = PONG ]; do
  i=$((i+1)); { [ $i -lt 3000 ] && kill -0 $pid 2>/dev/null; } || { cat "$d/log" >&2; exit 5; }; sleep 0.1; done
echo "dbsize=$(redis-cli -s "$d/s" info keyspace | tr -d '\r' | sed -n 's/^db[0-9]*:keys=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')"
redis-cli -s "$d/s" shutdown nosave >/dev/null 2>&1 || true

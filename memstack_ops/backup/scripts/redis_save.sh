# BGSAVE and wait until it has finished (not just one that was already running), after the
# REDIS_AUTH prelude (which defines r, redis-cli with the password from the environment).
# $1: how many 0.1 s polls to wait at most. Prints "saved".
info() { r INFO persistence | tr -d '\r'; }
field() { printf '%s\n' "$1" | sed -n "s/^$2://p"; }
p=$(info); saves0=$(field "$p" rdb_saves); last0=$(r LASTSAVE)
if [ -z "$saves0" ] && [ "$(r TIME | head -n 1)" -le "$last0" ]; then sleep 1; fi
i=0
while :; do
  out=$(r BGSAVE SCHEDULE 2>&1)
  case "$out" in *started*|*scheduled*) break;; *"in progress"*) ;; *) echo "BGSAVE failed: $out" >&2; exit 2;; esac
  i=$((i+1)); [ "$i" -lt "$1" ] || { echo "BGSAVE: another save stayed in progress" >&2; exit 3; }; sleep 0.1
done
i=0
while :; do
  p=$(info)
  if [ "$(field "$p" rdb_bgsave_in_progress)" = 0 ]; then
    saves=$(field "$p" rdb_saves)
    if [ -n "$saves0" ]; then [ "$saves" -gt "$saves0" ] && break
    else [ "$(r LASTSAVE)" -gt "$last0" ] && break; fi
  fi
  i=$((i+1)); [ "$i" -lt "$1" ] || { echo "BGSAVE did not finish in time" >&2; exit 4; }; sleep 0.1
done
st=$(field "$p" rdb_last_bgsave_status)
[ "$st" = ok ] || { echo "BGSAVE failed (rdb_last_bgsave_status:$st): see the server's log" >&2; exit 5; }
echo saved

"""Redis: BGSAVE, then a tar of the RDB (and the AOF directory); restores load the RDB."""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from ..host import BackupError, StreamFailed
from ._auth import REDIS_AUTH
from .base import EXT, Engine, Job, Plan, Svc, fail_capture, file_entry, image_for, oneoff_name, wrap_compress

REDIS_SAVE_SCRIPT = REDIS_AUTH + r'''
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
'''

REDIS_INFO_SCRIPT = REDIS_AUTH + r'''
get() { r CONFIG GET "$1" 2>/dev/null | sed -n 2p; }
echo "dir=$(get dir)"; echo "dbfilename=$(get dbfilename)"; echo "appendonly=$(get appendonly)"
echo "appenddirname=$(get appenddirname)"
r INFO | tr -d '\r' | grep -E '^(redis_version|used_memory_dataset|used_memory|db[0-9]+):'
'''

# In a one-off container on the service's volume, the service stopped: put the backup's RDB in
# place of the current data. With appendonly on, Redis 7 would load only appendonlydir/ and
# ignore dump.rdb, so a server on a unix socket loads the RDB and rewrites the AOF from it.
REDIS_RESTORE_SCRIPT = r'''set -eu
D=$1; DBF=$2; SRC=$3; AOF=$4; ADIR=$5
owner=$(stat -c %u:%g "$D")
work="$D/.memstack-restore"
rm -rf "$work"; mkdir -p "$work/new" "$work/old"
tar -C "$work/new" -xf -
test -s "$work/new/$SRC" || { echo "the backup holds no $SRC" >&2; exit 3; }
redis-check-rdb "$work/new/$SRC" >/dev/null || { echo "redis-check-rdb rejects the backup's RDB" >&2; exit 4; }
rollback() {
  rm -rf "$D/$DBF" "$D/$ADIR"
  [ -e "$work/old/$DBF" ] && mv "$work/old/$DBF" "$D/$DBF"
  [ -e "$work/old/$ADIR" ] && mv "$work/old/$ADIR" "$D/$ADIR"
  chown -R "$owner" "$D"; rm -rf "$work"
}
trap 'rc=$?; [ "$rc" = 0 ] || { echo "restore failed: the previous data was put back" >&2; rollback; }' EXIT
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
'''


class Redis(Engine):
    kind = "redis"
    restore_stops = True

    def plan(self, job: Job, svc: Svc) -> Plan:
        self.require_running(svc)
        out = job.query(svc, REDIS_INFO_SCRIPT, what="Reading the Redis configuration")
        info: dict[str, Any] = {}
        keys = 0
        for ln in out.splitlines():
            if "=" in ln and ":" not in ln.split("=", 1)[0]:
                k, v = ln.split("=", 1)
                info[k] = v.strip()
            elif ":" in ln:
                k, v = ln.split(":", 1)
                if k.startswith("db") and k[2:].isdigit():
                    keys += int(dict(x.split("=") for x in v.split(","))["keys"])
                else:
                    info[k] = v.strip()
        info["dir"] = info.get("dir") or "/data"
        info["dbfilename"] = info.get("dbfilename") or "dump.rdb"
        info["appenddirname"] = info.get("appenddirname") or "appendonlydir"
        info["keys"] = keys
        size = int(info.get("used_memory_dataset") or info.get("used_memory") or 0)
        return Plan(self, svc, size, info)

    def backup(self, job: Job, plan: Plan, set_dir: str) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        t0 = time.time()
        job.query(svc, REDIS_SAVE_SCRIPT, str(int(job.timeout * 10)), what="BGSAVE", timeout=job.timeout + 60)
        members = [info["dbfilename"]]
        aof = info.get("appendonly") == "yes"
        if aof:
            members.append(info["appenddirname"])
        inside, host_c, comp = job.compression(svc)
        cmd = 'cd "$1" && shift && tar -cf - "$@"'
        name = f"{svc.name}.redis.tar{EXT[job.compress]}"
        try:
            cap = job.capture(f"{svc.name}: rdb", job.exec_argv(svc, wrap_compress(cmd, inside) if inside else cmd,
                                                                 info["dir"], *members),
                              f"{set_dir}/{name}", host_c, plan.estimate)
        except StreamFailed as e:
            raise fail_capture(job, svc, e, f"Copying the RDB of {svc.name}") from None
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info.get("redis_version", ""), "dir": info["dir"], "dbfilename": info["dbfilename"],
                "appendonly": aof, "appenddirname": info["appenddirname"], "members": members,
                "method": "BGSAVE, wait for it, tar of the RDB" + (" and the AOF directory" if aof else "") +
                          " from the service's container; restores load the RDB",
                "command": f"docker exec {svc.container} redis-cli BGSAVE; docker exec {svc.container} tar -C "
                           f"{info['dir']} -cf - {' '.join(members)}",
                "counts": {"keys": info["keys"]}, "counts_snapshot": "separate", "notes": [],
                "files": [file_entry(name, cap, "rdb-tar", comp, svc.name)], "duration_s": round(time.time() - t0, 3)}

    def _rdb_keys(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[int, str]:
        f = next(x for x in entry["files"] if x["role"] == "rdb-tar")
        image = image_for(job.host, entry, svc)
        script = ('d=$(mktemp -d) && tar -C "$d" -xf - && redis-check-rdb "$d/$1"')
        r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(oneoff_name(job.project, entry["service"], "check"), image,
                                                               stdin=True, user="0", entrypoint="sh",
                                                               args=("-c", script, "sh", entry.get("dbfilename", "dump.rdb"))),
                          self.decompress_for(f), timeout=3600)
        m = re.search(r"(\d+) keys read", r.stdout)
        if r.failed or not m:
            raise BackupError(f"redis-check-rdb rejects the RDB in {f['name']}: {(r.stdout + r.stderr).strip()[-500:]}")
        return int(m.group(1)), image

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> str:
        keys, _ = self._rdb_keys(job, entry, set_dir, svc)
        return f"redis-check-rdb: RDB OK, {keys} key(s)"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[str, list[str]]:
        keys, image = self._rdb_keys(job, entry, set_dir, svc)
        f = next(x for x in entry["files"] if x["role"] == "rdb-tar")
        script = (r'''set -e; d=$(mktemp -d); tar -C "$d" -xf -; cd "$d"
redis-server --dir "$d" --dbfilename "$1" --appendonly no --port 0 --unixsocket "$d/s" --save '' >"$d/log" 2>&1 &
pid=$!
set +e
i=0; until [ "$(redis-cli -s "$d/s" ping 2>/dev/null)" = PONG ]; do
  i=$((i+1)); { [ $i -lt 3000 ] && kill -0 $pid 2>/dev/null; } || { cat "$d/log" >&2; exit 5; }; sleep 0.1; done
echo "dbsize=$(redis-cli -s "$d/s" info keyspace | tr -d '\r' | sed -n 's/^db[0-9]*:keys=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')"
redis-cli -s "$d/s" shutdown nosave >/dev/null 2>&1 || true''')
        r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(oneoff_name(job.project, entry["service"], "scratch"), image,
                                                               stdin=True, user="0", entrypoint="sh",
                                                               args=("-c", script, "sh", entry.get("dbfilename", "dump.rdb"))),
                          self.decompress_for(f), timeout=3600)
        m = re.search(r"dbsize=(\d+)", r.stdout)
        if r.failed or not m:
            raise BackupError(f"A scratch Redis could not load the RDB: {(r.stdout + r.stderr).strip()[-500:]}")
        got = int(m.group(1))
        problems = [] if got == keys else [f"keys: the RDB holds {keys}, the scratch server loaded {got}"]
        return f"scratch redis-server in {entry.get('image')} loaded {got} key(s) (RDB holds {keys})", problems

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Callable[[], Any] | None,
                **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        plan = opts.get("plan") or self.plan(job, svc)  # core.restore plans while the checksums run
        if safety:
            safety()
        f = next(x for x in entry["files"] if x["role"] == "rdb-tar")
        info = plan.info
        aof = info.get("appendonly") or "unknown"  # yes | no | unknown (CONFIG disabled)
        name = oneoff_name(job.project, svc.name, "restore")
        with job.stopped([svc.name]) as down:
            try:
                r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(
                    name, svc.image_id or svc.image, stdin=True, volumes_from=svc.container, user="0", entrypoint="sh",
                    args=("-c", REDIS_RESTORE_SCRIPT, "sh", info["dir"], info["dbfilename"],
                          entry.get("dbfilename", "dump.rdb"), aof, info["appenddirname"])),
                    self.decompress_for(f), timeout=job.timeout * 4)
            finally:
                job.remove_container(name)
            if r.failed or "restored" not in r.stdout:
                raise BackupError(f"Replacing the Redis data failed; the previous data was put back:\n"
                                  f"{(r.stderr or r.stdout).strip()[-1000:]}")
        out = job.query(svc, REDIS_AUTH + "r DBSIZE", what="Counting keys")
        return {"keys": int(out.strip().splitlines()[-1] or 0), "appendonly": aof, "downtime_s": down.seconds}

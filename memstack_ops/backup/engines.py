"""How each kind of service is dumped, checked and restored.

Every dump tool runs inside the database's own container (``docker exec``, no TTY) or, for
Neo4j community and volumes, in a one-off container of the same image on the same volume.
Credentials come from the container's own environment (PGPASSWORD from POSTGRES_PASSWORD, a
0600 defaults-extra-file for MySQL written inside the container, REDISCLI_AUTH), never argv.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .host import BackupError, Captured, Host, StreamFailed, q

# --------------------------------------------------------------------------- shell snippets

PG_AUTH = ('[ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "$POSTGRES_PASSWORD_FILE" ] && '
           'POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); PGPASSWORD="${POSTGRES_PASSWORD:-}"; export PGPASSWORD; ')
MY_AUTH = ("f=$(mktemp) || exit 1; trap 'rm -f \"$f\"' EXIT; "
           'p="${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}"; u=root; '
           'if [ -z "$p" ]; then u="${MYSQL_USER:-${MARIADB_USER:-root}}"; p="${MYSQL_PASSWORD:-${MARIADB_PASSWORD:-}}"; fi; '
           "printf '[client]\\nuser=%s\\npassword=\"%s\"\\n' \"$u\" \"$p\" > \"$f\"; "
           "cli=$(command -v mariadb || command -v mysql); dump=$(command -v mariadb-dump || command -v mysqldump); ")
REDIS_AUTH = ('a="${REDISCLI_AUTH:-${REDIS_PASSWORD:-}}"; [ -n "$a" ] && export REDISCLI_AUTH="$a"; '
              'r() { redis-cli --no-auth-warning "$@"; }; ')
NEO4J_AUTH = 'NEO4J_USERNAME="${NEO4J_AUTH%%/*}" NEO4J_PASSWORD="${NEO4J_AUTH#*/}" '

PG_COUNT_SQL = ("SELECT 'count|' || format('%I.%I', n.nspname, c.relname) || '|' || "
                "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), "
                "false, true, '')))[1]::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1;")

# pg_dump in the snapshot of a transaction that also counts every table's rows (concurrently
# with the dump): the counts match the dump exactly, for the restore test to compare.
PG_DUMP_SCRIPT = PG_AUTH + r'''trap '' PIPE
u=$1; d=$2; shift 2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/in" || exit 1
psql -X -q -At -F '|' -U "$u" -d "$d" < "$tmp/in" > "$tmp/out" 2> "$tmp/err" &
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
  pg_dump -U "$u" -d "$d" "$@"; exit $?
fi
printf '%s\n' '\set ON_ERROR_ROLLBACK on' "__COUNT_SQL__" >&3
pg_dump --snapshot="$snap" -U "$u" -d "$d" "$@"
rc=$?
printf '%s\n' "COMMIT;" >&3
exec 3>&-
wait "$pid"
if [ -s "$tmp/err" ]; then echo "memstack-ops-note: counting rows failed: $(head -c 300 "$tmp/err")" >&2
else sed -n 's/^count|/memstack-ops-count|/p' "$tmp/out" >&2; fi
exit $rc
'''.replace("__COUNT_SQL__", PG_COUNT_SQL)

MY_COUNT_SQL = ("SET SESSION group_concat_max_len = 16777216; START TRANSACTION WITH CONSISTENT SNAPSHOT; "
                "SELECT GROUP_CONCAT(CONCAT('SELECT ''', REPLACE(table_name, '''', ''''''), ''', COUNT(*) FROM `', "
                "REPLACE(table_schema, '`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`') SEPARATOR ' UNION ALL ') "
                "INTO @q FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'; "
                "SET @q = IFNULL(@q, 'SELECT 1, 1 FROM DUAL WHERE FALSE'); PREPARE s FROM @q; EXECUTE s; COMMIT;")

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

IN_CONTAINER = {"zstd": "zstd -q -c -3 -T0", "gzip": "gzip -c -6"}
HOST_COMPRESS = {"zstd": ["zstd", "-q", "-c", "-3", "-T0"], "gzip": ["gzip", "-c", "-6"]}
DECOMPRESS = {"zstd": ["zstd", "-q", "-dc"], "gzip": ["gzip", "-dc"]}
EXT = {"zstd": ".zst", "gzip": ".gz", "none": ""}
COMPRESSIONS = ("zstd", "gzip", "none")


def wrap_compress(cmd: str, tool: str) -> str:
    """``cmd | tool`` inside a POSIX sh without pipefail: the exit code of ``cmd`` survives."""
    return (f'rcf=$(mktemp) || exit 1; {{ ( {cmd} ); echo $? > "$rcf"; }} | {tool}; c=$?; '
            f'rc=$(cat "$rcf"); rm -f "$rcf"; [ "${{rc:-1}}" = 0 ] || exit "${{rc:-1}}"; exit $c')


def oneoff_name(project: str, service: str, what: str) -> str:
    return f"{project}-{service}-{what}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- services

@dataclass
class Svc:
    """A compose service and its container as the engine sees it."""

    name: str
    kind: str
    spec: dict[str, Any]
    container: str = ""
    state: str = ""
    image: str = ""
    image_id: str = ""
    started_at: str = ""
    mounts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        e = self.spec.get("environment") or {}
        if isinstance(e, list):
            e = dict(str(x).split("=", 1) for x in e if "=" in str(x))
        return {k: "" if v is None else str(v) for k, v in e.items()}

    @property
    def running(self) -> bool:
        return self.state == "running"


def inspect_service(t: Any, host: Host, model: dict[str, Any], name: str, ps: list[dict[str, Any]] | None = None) -> Svc:
    """The service and its container (``ps``: rows of ``compose ps`` already at hand)."""
    from ..kinds import kind_of

    spec = dict(model["services"][name])
    svc = Svc(name, kind_of(spec), spec, image=str(spec.get("image") or ""))
    rows = [r for r in (ps if ps is not None else t.compose.ps(t.c, [name])) if r.get("Service") == name]
    rows.sort(key=lambda r: r.get("State") != "running")
    if not rows:
        return svc
    r = host.run(["docker", "inspect", rows[0].get("Name") or rows[0].get("ID")])
    if r.failed:
        return svc
    info = json.loads(r.stdout)[0]
    svc.container = str(info.get("Name", "")).lstrip("/")
    svc.state = str(info.get("State", {}).get("Status", ""))
    svc.image = str(info.get("Config", {}).get("Image") or svc.image)
    svc.image_id = str(info.get("Image", ""))
    svc.started_at = str(info.get("State", {}).get("StartedAt", ""))
    svc.mounts = list(info.get("Mounts") or [])
    return svc


def container_state(host: Host, container: str) -> tuple[str, str, Any]:
    r = host.run(["docker", "inspect", "--format", "{{.State.Status}} {{.State.StartedAt}} {{.State.ExitCode}}", container])
    if r.failed:
        return "gone", "", None
    parts = r.stdout.split()
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else None


def image_for(host: Host, entry: dict[str, Any], svc: Svc | None) -> str:
    """The image a check runs in: the backup's own image when still present, else the service's."""
    for cand in (entry.get("image_id"), entry.get("image"), svc.image if svc else None):
        if cand and host.run(["docker", "image", "inspect", "--format", "{{.Id}}", cand]).ok:
            return str(cand)
    raise BackupError(f"Neither the image of the backup ({entry.get('image')}) nor the service's image is present on "
                      f"this host: pull or build it first (`memstack-ops pull` or `bash harness/build-images.sh`).")


# --------------------------------------------------------------------------- the job

@dataclass
class Job:
    """What one backup/restore run shares: target, host, compose model, options, output."""

    t: Any
    host: Host
    model: dict[str, Any]
    compress: str = "zstd"
    say: Callable[[str], None] = print
    progress: Callable[[str, int], Any] | None = None  # (label, expected bytes) -> context manager with .update(n)
    timeout: float = 300.0
    _tools: dict[tuple[str, str], bool] = field(default_factory=dict)
    _ps: list[dict[str, Any]] | None = None

    def ps(self) -> list[dict[str, Any]]:
        """``compose ps`` of the whole stack, cached until this job stops or starts something."""
        if self._ps is None:
            self._ps = self.t.compose.ps(self.t.c)
        return self._ps

    def inspect(self, name: str) -> Svc:
        return inspect_service(self.t, self.host, self.model, name, self.ps())

    @property
    def project(self) -> str:
        return str(self.t.stack.project)

    def scrub(self, text: str) -> str:
        return str(self.t.compose.scrub(text))

    def exec_argv(self, svc: Svc, script: str, *args: str, stdin: bool = False) -> list[str]:
        if not svc.container:
            raise BackupError(f"Service {svc.name} has no container: start it first (`memstack-ops up --service {svc.name}`).")
        return ["docker", "exec", *(["-i"] if stdin else []), svc.container, "sh", "-c", script, "sh", *args]

    def query(self, svc: Svc, script: str, *args: str, what: str, timeout: float | None = 120) -> str:
        """Run a small script in the service's container; raise with its (scrubbed) message."""
        r = self.host.run(self.exec_argv(svc, script, *args), timeout=timeout)
        if r.failed:
            msg = self.scrub((r.stderr or r.stdout).strip()) or f"exit {r.return_code}"
            raise BackupError(f"{what} on {svc.name} failed: {msg}")
        return str(r.stdout)

    def has_tool(self, svc: Svc, tool: str) -> bool:
        key = (svc.container, tool)
        if key not in self._tools:
            r = self.host.run(self.exec_argv(svc, f"command -v {tool} >/dev/null"), timeout=60)
            self._tools[key] = bool(r.ok)
        return self._tools[key]

    def compression(self, svc: Svc | None, algo: str | None = None) -> tuple[str | None, list[str] | None, str]:
        """(command to pipe into inside the container | None, host compressor argv | None, description)."""
        algo = algo or self.compress
        if algo == "none":
            return None, None, "none"
        if svc is not None and svc.container and self.has_tool(svc, algo):
            return IN_CONTAINER[algo], None, f"{algo} (in the container)"
        key = ("<host>", algo)
        if key not in self._tools:
            self._tools[key] = self.host.which(algo)
        if not self._tools[key]:
            raise BackupError(f"{algo} is installed neither in the {svc.name if svc else 'service'} container nor on "
                              f"this host: install it on the host (`apt-get install {algo}`) or use --compress "
                              f"{'gzip' if algo == 'zstd' else 'none'}.")
        return None, HOST_COMPRESS[algo], f"{algo} (on the host)"

    def capture(self, label: str, argv: list[str], dest: str, host_compress: list[str] | None,
                expected: int = 0) -> Captured:
        from ..interrupt import phase

        with phase(f"the dump ({label})"):
            if self.progress:
                with self.progress(label, expected) as bar:
                    return self.host.capture(argv, dest, host_compress, progress=bar.update)
            return self.host.capture(argv, dest, host_compress)

    def oneoff(self, name: str, image: str, *, volumes_from: str = "", volumes: tuple[str, ...] = (),
               user: str = "", entrypoint: str = "", stdin: bool = False, detach: bool = False,
               env_file: str = "", args: tuple[str, ...] = ()) -> list[str]:
        argv = ["docker", "run", "--name", name, "--label", f"memstack-ops.project={self.project}",
                "--label", "memstack-ops.role=backup"]
        argv += ["-d"] if detach else ["--rm"]
        if stdin:
            argv.append("-i")
        if volumes_from:
            argv += ["--volumes-from", volumes_from]
        for v in volumes:
            argv += ["-v", v]
        if user:
            argv += ["--user", user]
        if entrypoint:
            argv += ["--entrypoint", entrypoint]
        if env_file:
            argv += ["--env-file", env_file]
        return argv + [image, *args]

    def remove_container(self, name: str) -> None:
        self.host.run(["docker", "rm", "-f", "-v", name], timeout=120)

    def stop(self, services: list[str]) -> list[str]:
        """Stop those of ``services`` that run (compose stop); returns the ones it stopped."""
        running = sorted({str(r.get("Service")) for r in self.ps() if r.get("State") == "running"} & set(services),
                         key=services.index) if services else []
        if running:
            from ..interrupt import phase

            self._ps = None
            self.say(f"  stopping {', '.join(running)}")
            with phase(f"stopping {', '.join(running)}"):
                self.t.compose.check(self.t.c, "stop", *running, what=f"Stopping {', '.join(running)}")
        return running

    def start(self, services: list[str]) -> None:
        """Start services again and wait until they are healthy (lifecycle.up)."""
        if not services:
            return
        from .. import lifecycle

        self.say(f"  starting {', '.join(services)} and waiting for health")
        self._ps = None
        lifecycle.up(self.t, services)

    def wait_healthy(self, services: list[str]) -> None:
        """Wait until running services pass their own healthchecks (nothing is started). When the
        engine already reports every container running and healthy (a database restored while it
        ran), one ``docker inspect`` settles it: the same judgement the Watch's first round makes."""
        from ..health import Watch
        from ..interrupt import phase
        from ..lifecycle import one_shot_services

        if self.engine_says_healthy(services):
            self.say(f"  {', '.join(services)}: healthy")
            return
        self.say(f"  waiting for {', '.join(services)} to be healthy")
        with phase(f"the health wait of {', '.join(services)}"):
            Watch(self.t.c, self.t.compose, self.model, probes=self.t.probes, one_shot=one_shot_services(self.model)).wait(
                services, time.monotonic() + self.timeout, float(self.t.settings["interval"]))

    def engine_says_healthy(self, services: list[str]) -> bool:
        names = [c for c in (self.inspect(s).container for s in services) if c]
        if not names or len(names) != len(services):
            return False
        r = self.host.run(["docker", "inspect", "--format",
                           "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}", *names], timeout=30)
        states = r.stdout.split() if r.ok else []
        return len(states) == len(names) and all(x == "running/healthy" for x in states)

    def stopped(self, services: list[str]) -> "Stopped":
        return Stopped(self, services)


class Stopped:
    """``with job.stopped([svc]) as down:`` stops the running ones and starts them again on the way
    out, also after an error or Ctrl-C (a second Ctrl-C is held back until they are started);
    ``down.seconds`` is the downtime until healthy again."""

    def __init__(self, job: Job, services: list[str]):
        self.job, self.services = job, services
        self.stopped: list[str] = []
        self.t0 = 0.0
        self.seconds: float | None = None

    def __enter__(self) -> "Stopped":
        self.t0 = time.monotonic()
        running = [str(r.get("Service")) for r in self.job.ps() if r.get("State") == "running"]
        try:
            self.stopped = self.job.stop(self.services)
        except BaseException:  # interrupted (or failed) while stopping: start again what ran
            import sys

            self.stopped = [s for s in self.services if s in running]
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, et: Any, e: Any, tb: Any) -> bool:
        from ..interrupt import undoing, undone

        names = ", ".join(self.stopped)
        try:
            with undoing(et is KeyboardInterrupt):  # a second Ctrl-C waits until they run again
                self.job.start(self.stopped)
            if self.stopped:
                undone(f"{names} started again (healthy)")
        except BaseException as err:  # noqa: BLE001 - must not hide the original error
            if et is None:
                raise
            undone(f"starting {names} again FAILED ({err}); start it with `memstack-ops up --service "
                   f"{' --service '.join(self.stopped)}`")
            self.job.say(f"  WARNING: could not start {names} again: {err}\n"
                         f"  Start it with `memstack-ops up --service {' --service '.join(self.stopped)}`.")
        if self.stopped:
            self.seconds = round(time.monotonic() - self.t0, 1)
        return False


def file_entry(name: str, cap: Captured, role: str, compression: str, service: str) -> dict[str, Any]:
    entry = {"name": name, "service": service, "role": role, "size": cap.size, "sha256": cap.sha256,
             "compression": compression}
    if cap.pieces is not None:
        from .host import PIECE

        entry["pieces"] = {"size": PIECE, "sha256": cap.pieces}
    return entry


def fail_capture(job: Job, svc: Svc | None, e: StreamFailed, what: str) -> BackupError:
    """Explain a failed capture: the container died, the disk filled, or the tool failed."""
    detail = job.scrub(e.stderr.strip())[-1500:]
    why = str(e)
    if svc is not None and svc.container:
        # A tool killed by a signal may mean the container died: the engine notices a moment after
        # the exec stream ends, so look a few times (bounded) before concluding it is alive.
        killed = any(c is not None and c >= 128 for c in e.codes)
        for _ in range(10 if killed else 1):
            state, started, code = container_state(job.host, svc.container)
            died = state != "running" or bool(svc.started_at and started and started != svc.started_at)
            if died or not killed:
                break
            time.sleep(0.3)
        if died:
            why = (f"the {svc.name} container stopped during the backup (now {state}"
                   f"{f', exit code {code}' if code not in (None, '0') else ''}"
                   f"{', restarted since' if state == 'running' else ''}): {why[:1].lower()}{why[1:]}")
    return BackupError(f"{what} failed: {why}." + (f"\n--- its output ---\n{detail}" if detail else "") +
                       "\nNo file of this backup was kept (its partial files were removed); earlier backups are "
                       "untouched.")


# --------------------------------------------------------------------------- engines

@dataclass
class Plan:
    """What a backup of one service will do; built before anything is written."""

    engine: "Engine"
    svc: Svc
    estimate: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        return self.svc.name


class Engine:
    kind = ""
    downtime = False  # the service is stopped while it is backed up
    restore_stops = False  # restore stops the service and starts it again (waiting for health) itself

    def plan(self, job: Job, svc: Svc) -> Plan:
        raise NotImplementedError

    def backup(self, job: Job, plan: Plan, set_dir: str) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> str:
        raise NotImplementedError

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[str, list[str]]:
        raise NotImplementedError

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Callable[[], Any] | None,
                **opts: Any) -> dict[str, Any]:
        raise NotImplementedError

    # shared helpers
    @staticmethod
    def require_running(svc: Svc) -> None:
        if not svc.running:
            raise BackupError(f"Service {svc.name} is not running ({svc.state or 'no container'}): start it with "
                              f"`memstack-ops up --service {svc.name}` and run the backup again.")

    @staticmethod
    def decompress_for(fentry: dict[str, Any]) -> list[str] | None:
        algo = str(fentry.get("compression", "none")).split()[0]
        return DECOMPRESS.get(algo)


def compare_counts(expected: dict[str, Any], got: dict[str, Any], what: str) -> list[str]:
    problems = []
    for k in sorted(set(expected) | set(got)):
        if str(expected.get(k)) != str(got.get(k)):
            problems.append(f"{what} {k}: backup had {expected.get(k, 'none')}, scratch restore has {got.get(k, 'none')}")
    return problems


def wait_scratch(job: "Job", name: str, probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    """Wait until a scratch container answers ``probe``; fail at once when it exits."""
    def ready() -> bool:
        state = container_state(job.host, name)[0]
        if state != "running":
            logs = job.host.run(["docker", "logs", "--tail", "30", name], timeout=60)
            raise BackupError(f"The scratch container {name} stopped ({state}):\n{(logs.stdout + logs.stderr).strip()[-1500:]}")
        return probe()

    wait_until(ready, timeout, interval, what=f"the scratch container {name}")


def wait_until(fn: Callable[[], bool], timeout: float, interval: float = 0.5, what: str = "") -> None:
    """Poll ``fn`` until true, bounded in time and attempts (tenacity)."""
    import tenacity

    try:
        tenacity.Retrying(stop=tenacity.stop_after_delay(timeout) | tenacity.stop_after_attempt(int(timeout / interval) + 2),
                          wait=tenacity.wait_fixed(interval),
                          retry=tenacity.retry_if_result(lambda ok: not ok))(fn)
    except tenacity.RetryError:
        raise BackupError(f"Timed out after {timeout:.0f} s waiting for {what}.") from None


# ---- PostgreSQL

class Postgres(Engine):
    kind = "postgres"

    @staticmethod
    def who(svc: Svc) -> tuple[str, str]:
        user = svc.env.get("POSTGRES_USER") or "postgres"
        return user, svc.env.get("POSTGRES_DB") or user

    def plan(self, job: Job, svc: Svc) -> Plan:
        self.require_running(svc)
        user, db = self.who(svc)
        out = job.query(svc, PG_AUTH + 'psql -X -At -U "$1" -d "$2" -c "SELECT current_setting(\'server_version\'), '
                                       'current_setting(\'server_version_num\'), pg_database_size(current_database())"',
                        user, db, what="Reading the PostgreSQL version and size").strip().splitlines()[-1]
        version, num, size = out.rsplit("|", 2)
        return Plan(self, svc, int(size), {"user": user, "database": db, "version": version.split()[0],
                                           "version_num": int(num)})

    def dump_flags(self, job: Job, plan: Plan) -> tuple[list[str], str]:
        major = plan.info["version_num"] // 10000
        if job.compress == "none":
            return ["-Fc", "-Z0"], "none"
        if job.compress == "zstd" and major >= 16:
            return ["-Fc", "-Z", "zstd"], "zstd (pg_dump built-in)"
        return ["-Fc"], "gzip (pg_dump built-in)" + (" - zstd needs pg_dump 16+" if job.compress == "zstd" else "")

    def backup(self, job: Job, plan: Plan, set_dir: str) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        user, db = info["user"], info["database"]
        flags, comp = self.dump_flags(job, plan)
        name = f"{svc.name}.pgdump"
        argv = job.exec_argv(svc, PG_DUMP_SCRIPT, user, db, *flags)
        t0 = time.time()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, "pg-globals") as pool:  # roles (a few KB) while the database is dumped
            roles = pool.submit(self.dump_globals, job, svc, user, set_dir)
            try:
                cap = job.capture(f"{svc.name}: pg_dump", argv, f"{set_dir}/{name}", None, plan.estimate)
            except StreamFailed as e:
                raise fail_capture(job, svc, e, f"pg_dump of {svc.name}") from None
            gfile, gnotes = roles.result()
        counts, notes = parse_marked(cap.stderr)
        files = [file_entry(name, cap, "dump", comp, svc.name)] + ([gfile] if gfile else [])
        notes += gnotes
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info["version"], "db_version_num": info["version_num"], "database": db, "user": user,
                "method": "pg_dump -Fc inside the service's container, in an exported snapshot; roles with "
                          "pg_dumpall --globals-only",
                "command": f"docker exec {svc.container} pg_dump --snapshot=<exported> -U {user} -d {db} {' '.join(flags)}",
                "counts": counts, "notes": notes, "files": files, "duration_s": round(time.time() - t0, 3)}

    def dump_globals(self, job: Job, svc: Svc, user: str, set_dir: str) -> tuple[dict[str, Any] | None, list[str]]:
        """Roles and tablespaces (pg_dumpall --globals-only); without passwords when not a superuser."""
        _, host_c, gcomp = job.compression(None)  # a few KB: compress on the host, no probe
        gname = f"{svc.name}.globals.sql{EXT[job.compress]}"
        last = ""
        for extra in ("", " --no-role-passwords"):
            script = PG_AUTH + 'exec pg_dumpall --globals-only -U "$1"' + extra
            try:
                g = job.host.capture(job.exec_argv(svc, script, user), f"{set_dir}/{gname}", host_c)
            except StreamFailed as e:
                last = job.scrub(e.stderr.strip())[-300:]
                continue
            return (file_entry(gname, g, "globals", gcomp, svc.name),
                    ["roles dumped without passwords (the user is not a superuser)"] if extra else [])
        return None, [f"roles not dumped: pg_dumpall failed ({last})"]

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> str:
        dump = next(f for f in entry["files"] if f["role"] == "dump")
        image = image_for(job.host, entry, svc)
        r = job.host.feed(f"{set_dir}/{dump['name']}",
                          job.oneoff(oneoff_name(job.project, entry["service"], "check"), image, stdin=True,
                                     entrypoint="pg_restore", args=("-l",)), timeout=3600)
        if r.failed:
            raise BackupError(f"pg_restore -l rejects {dump['name']}: {job.scrub(r.stderr.strip())[-500:]}")
        tables = sum(1 for ln in r.stdout.splitlines() if " TABLE DATA " in ln)
        for f in entry["files"]:
            if f["role"] == "globals":
                check_compressed(job, f"{set_dir}/{f['name']}", f)
        return f"pg_restore -l: {tables} table(s) with data"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[str, list[str]]:
        import secrets

        dump = next(f for f in entry["files"] if f["role"] == "dump")
        image = image_for(job.host, entry, svc)
        user, db = entry.get("user", "postgres"), entry.get("database", "postgres")
        envf = job.host.tempfile(f"POSTGRES_PASSWORD={secrets.token_urlsafe(18)}\nPOSTGRES_USER={user}\nPOSTGRES_DB={db}\n")
        name = oneoff_name(job.project, entry["service"], "scratch")
        scratch = Svc(name, "postgres", {}, container=name)
        try:
            r = job.host.run(job.oneoff(name, image, detach=True, env_file=envf), timeout=300)
            if r.failed:
                raise BackupError(f"Starting a scratch {image} failed: {r.stderr.strip()}")
            wait_scratch(job, name, lambda: job.host.run(job.exec_argv(
                scratch, 'pg_isready -q -h 127.0.0.1 -U "$1" -d "$2"', user, db), timeout=30).ok, 180)
            r = job.host.feed(f"{set_dir}/{dump['name']}", job.exec_argv(
                scratch, PG_AUTH + 'exec pg_restore --single-transaction --exit-on-error -U "$1" -d "$2"', user, db,
                stdin=True))
            if r.failed:
                raise BackupError(f"Scratch restore of {dump['name']} failed: {job.scrub(r.stderr.strip())[-800:]}")
            out = job.query(scratch, PG_AUTH + 'psql -X -At -U "$1" -d "$2" -c "$3"', user, db, PG_COUNT_SQL,
                            what="Counting rows in the scratch restore")
            got = {ln.split("|")[1]: int(ln.split("|")[2]) for ln in out.splitlines() if ln.startswith("count|")}
        finally:
            job.remove_container(name)
            job.host.remove(envf)
        expected = entry.get("counts") or {}
        if not expected:
            return f"scratch restore in {entry.get('image')}: {len(got)} table(s), {sum(got.values())} row(s) (no counts recorded)", []
        return (f"scratch restore in {entry.get('image')}: {len(got)} table(s), {sum(got.values())} row(s), counts match",
                compare_counts(expected, got, "table"))

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Callable[[], Any] | None,
                globals_: bool = False, **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        plan = opts.get("plan") or self.plan(job, svc)  # core.restore plans while the checksums run
        if int(entry.get("db_version_num", 0)) // 10000 > plan.info["version_num"] // 10000:
            raise BackupError(f"The backup is from PostgreSQL {entry.get('db_version')}; {svc.name} runs "
                              f"{plan.info['version']}: pg_restore cannot read a dump from a newer major version. "
                              f"Restore into a server of the same or a newer version.")
        if safety:
            safety()
        user, db = plan.info["user"], plan.info["database"]
        if globals_:
            g = next((f for f in entry["files"] if f["role"] == "globals"), None)
            if g:
                r = job.host.feed(f"{set_dir}/{g['name']}", job.exec_argv(
                    svc, PG_AUTH + 'exec psql -X -q -U "$1" -d "$2"', user, db, stdin=True), self.decompress_for(g))
                if r.failed:
                    job.say(f"  roles: some statements failed (existing roles are kept): "
                            f"{job.scrub(r.stderr.strip())[-300:]}")
        dump = next(f for f in entry["files"] if f["role"] == "dump")
        r = job.host.feed(f"{set_dir}/{dump['name']}", job.exec_argv(
            svc, PG_AUTH + 'exec pg_restore --clean --if-exists --single-transaction --exit-on-error -U "$1" -d "$2"',
            user, db, stdin=True))
        if r.failed:
            raise BackupError(f"pg_restore into {svc.name} failed and its single transaction was rolled back, so the "
                              f"database is as it was before:\n{job.scrub(r.stderr.strip())[-1500:]}")
        counts = entry.get("counts") or {}
        return {"database": db, "tables": len(counts) if counts else "?", "rows": sum(counts.values()) if counts else "?"}


def parse_marked(stderr: str) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    notes = []
    for ln in stderr.splitlines():
        if ln.startswith("memstack-ops-count|"):
            table, n = ln[len("memstack-ops-count|"):].rsplit("|", 1)
            counts[table] = int(n)
        elif ln.startswith("memstack-ops-note: "):
            notes.append(ln[len("memstack-ops-note: "):])
    return counts, notes


def check_compressed(job: Job, path: str, f: dict[str, Any]) -> None:
    algo = str(f.get("compression", "none")).split()[0]
    if algo in ("zstd", "gzip"):
        r = job.host.run([algo, "-t", "-q", path] if algo == "zstd" else ["gzip", "-t", path], timeout=3600)
        if r.failed:
            raise BackupError(f"{f['name']} is not a valid {algo} stream: {r.stderr.strip()[-300:]}")


# ---- MySQL / MariaDB

class Mysql(Engine):
    kind = "mysql"

    @staticmethod
    def database(svc: Svc) -> str:
        return svc.env.get("MYSQL_DATABASE") or svc.env.get("MARIADB_DATABASE") or ""

    def plan(self, job: Job, svc: Svc) -> Plan:
        self.require_running(svc)
        db = self.database(svc)
        where = "WHERE table_schema = DATABASE()" if db else "WHERE table_schema NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')"
        out = job.query(svc, MY_AUTH + '"$cli" --defaults-extra-file="$f" -N -B -e "$1" $2',
                        f"SELECT VERSION(), COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables {where}",
                        db, what="Reading the MySQL version and size").strip().splitlines()[-1]
        version, size = out.split("\t")
        return Plan(self, svc, int(float(size)), {"database": db, "version": version})

    def backup(self, job: Job, plan: Plan, set_dir: str) -> dict[str, Any]:
        svc, db = plan.svc, plan.info["database"]
        counts: dict[str, int] = {}
        if db:
            out = job.query(svc, MY_AUTH + '"$cli" --defaults-extra-file="$f" -N -B -e "$1" "$2"', MY_COUNT_SQL, db,
                            what="Counting rows")
            counts = {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in out.splitlines() if "\t" in ln}
        # --add-drop-database only for the app's database: never emit DROP DATABASE mysql
        opts = ("--single-transaction --routines --triggers --events --hex-blob --no-tablespaces "
                "--default-character-set=utf8mb4" + (" --add-drop-database" if db else ""))
        cmd = f'"$dump" --defaults-extra-file="$f" {opts} ' + ('--databases "$1"' if db else "--all-databases")
        inside, host_c, comp = job.compression(svc)
        script = MY_AUTH + (wrap_compress(cmd, inside) if inside else cmd)
        name = f"{svc.name}.sql{EXT[job.compress]}"
        t0 = time.time()
        try:
            cap = job.capture(f"{svc.name}: mysqldump", job.exec_argv(svc, script, db), f"{set_dir}/{name}", host_c,
                              plan.estimate)
        except StreamFailed as e:
            raise fail_capture(job, svc, e, f"The dump of {svc.name}") from None
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": plan.info["version"], "database": db,
                "method": "mysqldump/mariadb-dump --single-transaction inside the service's container",
                "command": f"docker exec {svc.container} mysqldump {opts} " + (f"--databases {db}" if db else "--all-databases"),
                "counts": counts, "counts_snapshot": "separate",
                "notes": [],
                "files": [file_entry(name, cap, "dump", comp, svc.name)], "duration_s": round(time.time() - t0, 3)}

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> str:
        f = next(x for x in entry["files"] if x["role"] == "dump")
        path = f"{set_dir}/{f['name']}"
        check_compressed(job, path, f)
        dec = self.decompress_for(f)
        tail = (shlex.join(dec) + " < " + q(path) if dec else "cat -- " + q(path)) + " | tail -c 300"
        r = job.host.sh(tail, timeout=3600)
        if "-- Dump completed" not in r.stdout:
            raise BackupError(f"{f['name']} does not end with mysqldump's '-- Dump completed' line: it is truncated.")
        return "SQL dump complete (trailer present)"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[str, list[str]]:
        import secrets

        f = next(x for x in entry["files"] if x["role"] == "dump")
        image = image_for(job.host, entry, svc)
        pw = secrets.token_urlsafe(18)
        envf = job.host.tempfile(f"MYSQL_ROOT_PASSWORD={pw}\nMARIADB_ROOT_PASSWORD={pw}\n")
        name = oneoff_name(job.project, entry["service"], "scratch")
        scratch = Svc(name, "mysql", {}, container=name)
        try:
            r = job.host.run(job.oneoff(name, image, detach=True, env_file=envf), timeout=300)
            if r.failed:
                raise BackupError(f"Starting a scratch {image} failed: {r.stderr.strip()}")
            ping = MY_AUTH + '"$cli" --defaults-extra-file="$f" -h127.0.0.1 -N -B -e "SELECT 1"'
            wait_scratch(job, name, lambda: job.host.run(job.exec_argv(scratch, ping), timeout=30).ok, 240)
            r = job.host.feed(f"{set_dir}/{f['name']}", job.exec_argv(scratch, MY_AUTH + '"$cli" --defaults-extra-file="$f"',
                                                                       stdin=True), self.decompress_for(f))
            if r.failed:
                raise BackupError(f"Scratch restore of {f['name']} failed: {job.scrub(r.stderr.strip())[-800:]}")
            got: dict[str, int] = {}
            if entry.get("database"):
                out = job.query(scratch, MY_AUTH + '"$cli" --defaults-extra-file="$f" -N -B -e "$1" "$2"', MY_COUNT_SQL,
                                entry["database"], what="Counting rows in the scratch restore")
                got = {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in out.splitlines() if "\t" in ln}
        finally:
            job.remove_container(name)
            job.host.remove(envf)
        problems = compare_counts(entry.get("counts") or {}, got, "table")
        detail = f"scratch restore in {entry.get('image')}: {len(got)} table(s), {sum(got.values())} row(s)"
        if problems and entry.get("counts_snapshot") == "separate":
            job.say("  note: MySQL row counts were taken in a snapshot just before the dump's own; writes in "
                    "between explain small differences")
        return detail + ("" if problems else ", counts match"), problems

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Callable[[], Any] | None,
                **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        if safety:
            safety()
        f = next(x for x in entry["files"] if x["role"] == "dump")
        r = job.host.feed(f"{set_dir}/{f['name']}", job.exec_argv(svc, MY_AUTH + '"$cli" --defaults-extra-file="$f"',
                                                                   stdin=True), self.decompress_for(f))
        if r.failed:
            raise BackupError(f"Loading the dump into {svc.name} failed part-way (MySQL DDL is not transactional, so "
                              f"the database may be partly restored: restore the safety backup if needed):\n"
                              f"{job.scrub(r.stderr.strip())[-1500:]}")
        db = entry.get("database") or ""
        tables = 0
        if db:
            out = job.query(svc, MY_AUTH + '"$cli" --defaults-extra-file="$f" -N -B -e "$1"',
                            f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{db}'",
                            what="Summarising the restore")
            tables = int(out.strip() or 0)
        return {"tables": tables, "database": db}


# ---- Redis

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


# ---- Neo4j

class Neo4j(Engine):
    kind = "neo4j"
    downtime = True
    restore_stops = True
    DATABASES = ("neo4j", "system")

    def plan(self, job: Job, svc: Svc) -> Plan:
        self.require_running(svc)
        out = job.query(svc, 'echo "version=$(neo4j-admin --version 2>/dev/null | tail -n 1)"; '
                             'echo "owner=$(stat -c %u:%g /data)"; echo "size=$(du -sk /data | cut -f1)"',
                        what="Reading the Neo4j version")
        info = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        counts: dict[str, int] = {}
        r = job.host.run(job.exec_argv(svc, NEO4J_AUTH + 'cypher-shell --format plain "MATCH (n) RETURN count(n) AS nodes"'),
                         timeout=120)
        if r.ok and r.stdout.strip() and r.stdout.strip().splitlines()[-1].strip().isdigit():
            counts["nodes"] = int(r.stdout.strip().splitlines()[-1])
        r = job.host.run(job.exec_argv(svc, NEO4J_AUTH + 'cypher-shell --format plain '
                                            '"MATCH ()-[r]->() RETURN count(r) AS relationships"'), timeout=120)
        if r.ok and r.stdout.strip() and r.stdout.strip().splitlines()[-1].strip().isdigit():
            counts["relationships"] = int(r.stdout.strip().splitlines()[-1])
        info["counts"] = counts
        return Plan(self, svc, int(info.get("size") or 0) * 1024, info,
                    note=f"{svc.name} is stopped during the dump (Neo4j community dumps offline only)")

    def dump_argv(self, job: Job, svc: Svc, name: str, owner: str, db: str) -> list[str]:
        return job.oneoff(name, svc.image_id or svc.image, volumes_from=svc.container, user=owner, entrypoint="neo4j-admin",
                          args=("database", "dump", db, "--to-stdout"))

    def backup(self, job: Job, plan: Plan, set_dir: str, stopped_already: bool = False) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        owner = info.get("owner") or "0:0"
        files: list[dict[str, Any]] = []
        t0 = time.time()
        with job.stopped([] if stopped_already else [svc.name]) as down:
            for db in self.DATABASES:
                name = oneoff_name(job.project, svc.name, f"dump-{db}")
                fname = f"{svc.name}.{db}.dump"
                try:
                    cap = job.capture(f"{svc.name}: dump {db}", self.dump_argv(job, svc, name, owner, db),
                                      f"{set_dir}/{fname}", None, plan.estimate if db == "neo4j" else 0)
                except StreamFailed as e:
                    raise fail_capture(job, None, e, f"neo4j-admin database dump {db} of {svc.name}") from None
                finally:
                    job.remove_container(name)  # an interrupted dump (Ctrl-C) may leave its one-off behind
                files.append(file_entry(fname, cap, f"dump:{db}", "native (neo4j-admin dump format)", svc.name))
        downtime = down.seconds
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info.get("version", ""), "owner": owner, "databases": list(self.DATABASES),
                "method": "server stopped (compose stop), neo4j-admin database dump --to-stdout in a one-off "
                          "container of the same image on the same volumes, server started again",
                "command": f"docker run --rm --volumes-from {svc.container} --user {owner} --entrypoint neo4j-admin "
                           f"{svc.image} database dump <db> --to-stdout",
                "counts": info.get("counts", {}), "notes": [], "downtime_s": downtime,
                "files": files, "duration_s": round(time.time() - t0, 3)}

    def _info(self, job: Job, image: str, path: str, db: str, service: str) -> str:
        r = job.host.feed(path, job.oneoff(oneoff_name(job.project, service, "check"), image, stdin=True,
                                           entrypoint="neo4j-admin",
                                           args=("database", "load", db, "--from-stdin", "--info")), timeout=3600)
        if r.failed:
            raise BackupError(f"neo4j-admin database load --info rejects {path.rsplit('/', 1)[-1]}: "
                              f"{(r.stderr or r.stdout).strip()[-500:]}")
        return str(r.stdout)

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> str:
        image = image_for(job.host, entry, svc)
        for f in entry["files"]:
            self._info(job, image, f"{set_dir}/{f['name']}", f["role"].split(":", 1)[1], entry["service"])
        return f"neo4j-admin load --info: {len(entry['files'])} dump(s) OK"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[str, list[str]]:
        import secrets

        image = image_for(job.host, entry, svc)
        f = next(x for x in entry["files"] if x["role"] == "dump:neo4j")
        owner = entry.get("owner") or "0:0"
        vol = oneoff_name(job.project, entry["service"], "scratch")
        name = vol
        envf = job.host.tempfile(f"NEO4J_AUTH=neo4j/{secrets.token_urlsafe(18)}\n")
        try:
            job.host.run(["docker", "volume", "create", "--label", f"memstack-ops.project={job.project}", vol], timeout=60)
            r = job.host.run(job.oneoff(name + "-own", image, volumes=(f"{vol}:/data",), user="0", entrypoint="chown",
                                        args=(owner, "/data")), timeout=300)
            r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(
                name + "-load", image, stdin=True, volumes=(f"{vol}:/data",), user=owner, entrypoint="neo4j-admin",
                args=("database", "load", "neo4j", "--from-stdin", "--overwrite-destination=true")), timeout=3600)
            if r.failed:
                raise BackupError(f"Scratch load of {f['name']} failed: {(r.stderr or r.stdout).strip()[-800:]}")
            r = job.host.run(job.oneoff(name, image, detach=True, volumes=(f"{vol}:/data",), env_file=envf), timeout=300)
            if r.failed:
                raise BackupError(f"Starting a scratch {image} failed: {r.stderr.strip()}")
            scratch = Svc(name, "neo4j", {}, container=name)
            count = NEO4J_AUTH + 'cypher-shell --format plain "MATCH (n) RETURN count(n) AS nodes"'
            last: dict[str, Any] = {}

            def ready() -> bool:
                last["r"] = job.host.run(job.exec_argv(scratch, count), timeout=60)
                return bool(last["r"].ok)

            wait_scratch(job, name, ready, 300, 1.0)
            got = {"nodes": int(last["r"].stdout.strip().splitlines()[-1])}
        finally:
            job.remove_container(name)
            job.host.run(["docker", "volume", "rm", "-f", vol], timeout=120)
            job.host.remove(envf)
        expected = {k: v for k, v in (entry.get("counts") or {}).items() if k == "nodes"}
        problems = compare_counts(expected, got, "count") if expected else []
        return f"scratch Neo4j ({entry.get('image')}) loaded the dump: {got['nodes']} node(s)", problems

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Callable[[], Any] | None,
                system: bool = False, **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        plan = opts.get("plan") or self.plan(job, svc)  # core.restore plans while the checksums run
        have, want = plan.info.get("version", ""), str(entry.get("db_version", ""))
        if have and want and _vtuple(want) > _vtuple(have):
            raise BackupError(f"The backup is from Neo4j {want}; {svc.name} runs {have}: a dump loads into the same or "
                              f"a newer version only (downgrade is not supported). Nothing was changed.")
        owner = plan.info.get("owner") or entry.get("owner") or "0:0"
        dbs = ["neo4j"] + (["system"] if system else [])
        with job.stopped([svc.name]) as down:
            if safety:
                safety(plan=plan, stopped_already=True)  # the safety dump uses this same downtime
            for db in dbs:
                f = next((x for x in entry["files"] if x["role"] == f"dump:{db}"), None)
                if not f:
                    raise BackupError(f"The backup has no dump of database {db}.")
                name = oneoff_name(job.project, svc.name, f"load-{db}")
                try:
                    r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(
                        name, svc.image_id or svc.image, stdin=True, volumes_from=svc.container, user=owner,
                        entrypoint="neo4j-admin",
                        args=("database", "load", db, "--from-stdin", "--overwrite-destination=true")),
                        timeout=job.timeout * 20)
                finally:
                    job.remove_container(name)
                if r.failed:
                    raise BackupError(f"neo4j-admin database load {db} failed: {(r.stderr or r.stdout).strip()[-1000:]}")
        downtime = down.seconds
        r = job.host.run(job.exec_argv(svc, NEO4J_AUTH + 'cypher-shell --format plain "MATCH (n) RETURN count(n) AS nodes"'),
                         timeout=120)
        nodes = r.stdout.strip().splitlines()[-1] if r.ok else "?"
        return {"nodes": nodes, "databases": dbs, "downtime_s": downtime}


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# ---- named volumes

@dataclass
class Volume:
    key: str  # the compose key
    name: str  # the engine's volume name
    services: list[str]
    image: str  # an image with tar and sh: one of its services'


def stack_volumes(model: dict[str, Any]) -> list[Volume]:
    out = []
    for key, spec in (model.get("volumes") or {}).items():
        spec = spec or {}
        if spec.get("external"):
            continue
        users = [n for n, s in (model.get("services") or {}).items()
                 if any(isinstance(v, dict) and v.get("type") == "volume" and v.get("source") == key
                        for v in s.get("volumes") or [])]
        image = next((str(model["services"][u].get("image")) for u in users if model["services"][u].get("image")), "")
        out.append(Volume(key, str(spec.get("name") or key), users, image))
    return out


class Volumes(Engine):
    kind = "volumes"

    def backup_volume(self, job: Job, vol: Volume, set_dir: str) -> dict[str, Any]:
        if not vol.image:
            raise BackupError(f"No service of the stack uses volume {vol.key}: no image to read it with.")
        if job.host.run(["docker", "volume", "inspect", vol.name], timeout=60).failed:
            raise BackupError(f"Volume {vol.name} does not exist yet (start the stack once first).")
        name = oneoff_name(job.project, vol.key.replace("_", "-"), "tar")
        argv = job.oneoff(name, vol.image, volumes=(f"{vol.name}:/v:ro",), user="0", entrypoint="tar",
                          args=("-C", "/v", "-cf", "-", "."))
        _, host_c, comp = job.compression(None)
        fname = f"volume-{vol.key}.tar{EXT[job.compress]}"
        t0 = time.time()
        try:
            cap = job.capture(f"volume {vol.key}", argv, f"{set_dir}/{fname}", host_c)
        except StreamFailed as e:
            raise fail_capture(job, None, e, f"The tar of volume {vol.key}") from None
        finally:
            job.remove_container(name)
        return {"service": vol.key, "volume": vol.key, "volume_name": vol.name, "kind": self.kind, "image": vol.image,
                "used_by": vol.services, "method": "tar of the named volume from a one-off container",
                "command": shlex.join(argv), "counts": {}, "notes": [],
                "files": [file_entry(fname, cap, "tar", comp, vol.key)], "duration_s": round(time.time() - t0, 3)}

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> str:
        f = entry["files"][0]
        path = f"{set_dir}/{f['name']}"
        check_compressed(job, path, f)
        dec = self.decompress_for(f)
        r = job.host.sh((shlex.join(dec) + " < " + q(path) if dec else "cat -- " + q(path)) + " | tar -tf - | wc -l",
                        timeout=3600)
        if r.failed:
            raise BackupError(f"{f['name']} is not a valid tar archive: {r.stderr.strip()[-300:]}")
        return f"tar: {r.stdout.strip()} entries"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[str, list[str]]:
        f = entry["files"][0]
        vol = oneoff_name(job.project, entry["volume"].replace("_", "-"), "scratch")
        try:
            job.host.run(["docker", "volume", "create", vol], timeout=60)
            r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(
                vol, entry["image"], stdin=True, volumes=(f"{vol}:/v",), user="0", entrypoint="sh",
                args=("-c", 'tar -C /v -xpf - && find /v -mindepth 1 | wc -l')), self.decompress_for(f), timeout=3600)
        finally:
            job.host.run(["docker", "volume", "rm", "-f", vol], timeout=120)
        if r.failed:
            raise BackupError(f"Extracting {f['name']} into a scratch volume failed: {r.stderr.strip()[-500:]}")
        return f"extracted into a scratch volume: {r.stdout.strip().splitlines()[-1]} file(s)", []

    def restore_volume(self, job: Job, entry: dict[str, Any], set_dir: str, vol: Volume) -> None:
        f = entry["files"][0]
        name = oneoff_name(job.project, vol.key.replace("_", "-"), "restore")
        script = ('set -e; w=/v/.memstack-restore; rm -rf "$w"; mkdir "$w"; tar -C "$w" -xpf -; '
                  'find /v -mindepth 1 -maxdepth 1 ! -name .memstack-restore -exec rm -rf {} +; '
                  'find "$w" -mindepth 1 -maxdepth 1 -exec mv {} /v/ \\;; rmdir "$w"; echo restored')
        try:
            r = job.host.feed(f"{set_dir}/{f['name']}", job.oneoff(
                name, vol.image or entry["image"], stdin=True, volumes=(f"{vol.name}:/v",), user="0", entrypoint="sh",
                args=("-c", script)), self.decompress_for(f), timeout=job.timeout * 20)
        finally:
            job.remove_container(name)
        if r.failed or "restored" not in r.stdout:
            raise BackupError(f"Restoring volume {vol.key} failed: {r.stderr.strip()[-800:]}")


ENGINES: dict[str, Engine] = {e.kind: e for e in (Postgres(), Mysql(), Redis(), Neo4j(), Volumes())}
DB_KINDS = ("postgres", "mysql", "redis", "neo4j")

"""Health gating: is each service really ready?

A service is ready when its own compose healthcheck passes. We read the engine's status and,
because the engine only re-runs a check every ``interval`` (10 s in the seeds), we also run the
very same check ourselves with ``docker exec`` as soon as the container runs, so a ready service
is seen within one poll instead of at the engine's next tick. Services without a healthcheck use
a configured probe (``tcp:PORT`` or an ``http://`` URL, run on the engine's host) or, failing
that, count as ready once running. A database of a kind the tool knows must in addition answer a
real request over TCP inside its container, twice (see READY below), with or without a
healthcheck. A container that exits, crash-loops or that the engine marks unhealthy fails the
wait at once. Polling is bounded by tenacity (time and attempts).

Everything goes through ``c.run`` so the same code runs on a remote host through fabric.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .compose import Compose, run
from .errors import HealthError


@dataclass
class Status:
    service: str
    state: str = "pending"  # pending, created, running, exited, restarting, ...
    health: str = ""  # engine health: starting, healthy, unhealthy, "" (none)
    ready: bool = False
    failed: bool = False
    detail: str = ""  # human summary of the last check
    output: str = ""  # last check output (ours or the engine's)
    container: str = ""
    ready_after: float | None = None


def check_argv(container: str, test: list[str]) -> list[str] | None:
    """The docker exec argv that runs a compose healthcheck ``test`` in ``container``.

    ``compose config`` re-escapes a literal ``$`` as ``$$`` (so its output can be parsed again);
    the engine runs the test with single ``$``, and so must we."""
    if not test or test[0] == "NONE":
        return None
    test = [a.replace("$$", "$") for a in test]
    if test[0] == "CMD-SHELL":
        return ["docker", "exec", container, "/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return ["docker", "exec", container, *test[1:]]
    return ["docker", "exec", container, "/bin/sh", "-c", " ".join(test)]


# --------------------------------------------------------------------------- readiness per kind
# What "ready" means for each kind of database the tool knows, whatever its compose file says:
# a real request over TCP on 127.0.0.1 inside its container (the address family its dependants
# use; the image's temporary init server listens on the Unix socket only, so it never passes),
# with credentials taken from the container's environment by the container's shell, never from
# argv. One block, self-contained, keyed by kind (see kinds.py for how a kind is recognised).

# HTTP GET of 127.0.0.1:$1$2 with whatever client the image has; 127 when it has none.
_HTTP_GET = r"""get() {
  if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$1$2"
  elif command -v wget >/dev/null 2>&1; then wget -q -T 5 -O /dev/null "http://127.0.0.1:$1$2"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "http://127.0.0.1:$1$2"
  elif command -v bash >/dev/null 2>&1; then
    bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
      IFS= read -r -t 5 line <&3; case "$line" in "HTTP/"*" 2"[0-9][0-9]*) exit 0 ;; esac
      echo "${line:-no answer}" >&2; exit 1' get "$1" "$2"
  else echo "no HTTP client (curl, wget, python3 or bash) in the container" >&2; return 127; fi
}
"""
READY: dict[str, str] = {
    # psql over TCP as the image's own user: POSTGRES_* (official image) or POSTGRESQL_* (bitnami)
    "postgres": r"""pw=${POSTGRES_PASSWORD:-${POSTGRESQL_PASSWORD:-}}
[ -z "$pw" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && pw=$(cat "$POSTGRES_PASSWORD_FILE")
u=${POSTGRES_USER:-${POSTGRESQL_USERNAME:-postgres}}
export PGPASSWORD="$pw" PGCONNECT_TIMEOUT=5
exec psql -h 127.0.0.1 -U "$u" -d "${POSTGRES_DB:-${POSTGRESQL_DATABASE:-$u}}" -XAtqc 'SELECT 1'""",
    # root (or the image's user) over TCP; with only a random root password nobody knows, the
    # server's own answer to mysqladmin ping over TCP (0 even for "Access denied")
    "mysql": r"""cli=$(command -v mariadb || command -v mysql) || { echo "no mysql client in the container" >&2; exit 127; }
u=root pw=${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}
f=${MYSQL_ROOT_PASSWORD_FILE:-${MARIADB_ROOT_PASSWORD_FILE:-}}
[ -z "$pw" ] && [ -n "$f" ] && pw=$(cat "$f")
if [ -z "$pw" ] && [ -n "${MYSQL_PASSWORD:-${MARIADB_PASSWORD:-}}" ]; then
  u=${MYSQL_USER:-${MARIADB_USER:-root}} pw=${MYSQL_PASSWORD:-$MARIADB_PASSWORD}
elif [ -z "$pw" ] && [ -n "${MYSQL_RANDOM_ROOT_PASSWORD:-${MARIADB_RANDOM_ROOT_PASSWORD:-}}" ]; then
  adm=$(command -v mariadb-admin || command -v mysqladmin) && exec "$adm" ping -h127.0.0.1 --connect-timeout=5
fi
[ -n "$pw" ] && export MYSQL_PWD="$pw"
exec "$cli" -h127.0.0.1 -u"$u" --connect-timeout=5 -NBe 'SELECT 1'""",
    # PING over TCP must answer PONG (not LOADING). The password: a line on stdin (when the
    # service's command carries --requirepass), else the environment, else requirepass in the
    # config file named in the command ($2). $1 is the port.
    "redis": r"""IFS= read -r pw || :
[ -n "$pw" ] || pw=${REDISCLI_AUTH:-${REDIS_PASSWORD:-}}
if [ -z "$pw" ] && [ -n "${2:-}" ] && [ -r "$2" ]; then
  pw=$(sed -n 's/^[[:space:]]*requirepass[[:space:]][[:space:]]*//p' "$2" | tail -n 1 | sed 's/^"\(.*\)"$/\1/')
fi
[ -n "$pw" ] && export REDISCLI_AUTH="$pw"
out=$(redis-cli -h 127.0.0.1 -p "${1:-6379}" PING 2>&1); echo "$out"; [ "$out" = PONG ]""",
    "neo4j": r"""a=${NEO4J_AUTH:-neo4j/neo4j}
if [ "$a" = none ]; then export NEO4J_USERNAME=neo4j NEO4J_PASSWORD=
else export NEO4J_USERNAME="${a%%/*}" NEO4J_PASSWORD="${a#*/}"; fi
exec cypher-shell -a bolt://127.0.0.1:7687 --format plain 'RETURN 1'""",
    # MinIO's readiness endpoint; the official image has neither curl nor wget, but `mc`
    "minio": _HTTP_GET + r"""get 9000 /minio/health/ready; rc=$?
[ "$rc" = 127 ] && command -v mc >/dev/null 2>&1 && exec mc ready local
exit $rc""",
    "qdrant": _HTTP_GET + "get 6333 /readyz",
    "milvus": _HTTP_GET + "get 9091 /healthz",
}
# etcd's image has no shell: etcdctl itself (`endpoint health` commits a quorum read).
READY_ARGV: dict[str, list[str]] = {"etcd": ["etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"]}
READY_KINDS = (*READY, *READY_ARGV)
# The server answered, and refused the credentials from the container's environment: waiting
# will not change that.
REFUSED = re.compile(r"password authentication failed|Access denied for user|unauthorized due to authentication|"
                     r"WRONGPASS|NOAUTH|invalid password|invalid username-password", re.I)


def _words(v: Any) -> list[str]:
    """A compose command/entrypoint as words, with the script of a `sh -c "..."` split too."""
    import shlex

    words = [str(w) for w in (v if isinstance(v, list) else shlex.split(v) if v else [])]
    out: list[str] = []
    for i, w in enumerate(words):
        try:
            out += shlex.split(w) if i and words[i - 1] == "-c" else [w]
        except ValueError:
            out.append(w)
    return out


def _redis_args(service: Mapping[str, Any]) -> tuple[str, str, str]:
    """(password, port, config file) from a redis service's command line in the compose model.
    A value that the container's shell expands (``$$VAR``) is left to the environment."""
    words = _words(service.get("entrypoint")) + _words(service.get("command"))
    opts: dict[str, str] = {}
    conf = ""
    for i, w in enumerate(words):
        if w in ("--requirepass", "--port") and i + 1 < len(words):
            opts[w] = words[i + 1]
        elif w.endswith(".conf"):
            conf = w
    pw = opts.get("--requirepass", "")
    port = opts.get("--port", "6379")
    return ("" if "$" in pw else pw), (port if port.isdigit() else "6379"), conf


def ready_argv(container: str, kind: str, service: Mapping[str, Any]) -> tuple[list[str], str | None] | None:
    """The docker exec argv (and what to feed its stdin) that asks a ``kind`` database in
    ``container`` a real question over TCP; None for kinds without one."""
    if kind in READY_ARGV:
        return ["docker", "exec", container, *READY_ARGV[kind]], None
    if kind not in READY:
        return None
    if kind == "redis":
        pw, port, conf = _redis_args(service)
        return ["docker", "exec", "-i", container, "/bin/sh", "-c", READY[kind], "ready", port, conf], pw + "\n"
    return ["docker", "exec", container, "/bin/sh", "-c", READY[kind]], None


def rule(service: Mapping[str, Any], probe: str | None = None, one_shot: bool = False) -> str:
    """Which rule judges the readiness of one service (shown by `status`)."""
    from .kinds import kind_of

    if one_shot:
        return "exit 0"
    hc = service.get("healthcheck") or {}
    test = hc.get("test")
    parts = []
    if test and not hc.get("disable") and list(test if isinstance(test, list) else [test])[0] != "NONE":
        parts.append("compose check")
    elif probe:
        parts.append(f"probe {probe}")
    kind = kind_of(service)
    if kind in READY_KINDS:
        parts.append(f"{kind} query")
    return " + ".join(parts) or "running"


def probe_argv(probe: str) -> list[str]:
    """Host-side probe for services without a healthcheck: ``tcp:PORT[@HOST]`` or an http URL."""
    if probe.startswith(("http://", "https://")):
        return ["curl", "-fsS", "-o", "/dev/null", "--max-time", "3", probe]
    if probe.startswith("tcp:"):
        port, _, host = probe[4:].partition("@")
        if port.isdigit():
            return ["bash", "-c", f"exec 3<>/dev/tcp/{host or '127.0.0.1'}/{int(port)}"]
    raise HealthError(f"Unknown probe {probe!r}: use tcp:PORT or an http(s):// URL in the stack's probes config.")


def _seconds(v: Any, default: float) -> float:
    """Compose durations in `config --format json` come as Go duration strings ("5s", "1m30s")."""
    if v is None:
        return default
    if isinstance(v, (int, float)):
        return float(v) / 1e9 if v > 1e6 else float(v)
    total, num = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    s = str(v)
    i = 0
    while i < len(s):
        ch = s[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = s[i:i + 2] if s[i:i + 2] in units else ch
        total += float(num or 0) * units.get(unit, 1)
        num, i = "", i + len(unit)
    return total + (float(num) if num else 0.0)


READY_TIMEOUT = 20.0  # seconds for one TCP query of a database (a JVM client starts slowly)


class _Refused(Exception):
    """The database answered and refused the credentials: waiting will not help."""


@dataclass
class Watch:
    """Tracks the readiness of a set of services of one compose project."""

    c: Any
    compose: Compose
    model: Mapping[str, Any]
    probes: Mapping[str, str] = field(default_factory=dict)
    one_shot: set[str] = field(default_factory=set)  # services that succeed by exiting 0
    statuses: dict[str, Status] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    on_change: Callable[[Status], None] | None = None
    # Checks run in the background, one at a time per service: a slow check (a client that
    # waits for its server) never delays noticing that another service is ready.
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, "health-check"))
    inflight: dict[str, Future[tuple[bool, str]]] = field(default_factory=dict)
    settle: float = 0.25  # how long a round waits for the checks it started (most take < 0.1 s)
    # A database's TCP query must pass twice, this far apart: an image's init server can answer
    # once and then restart (the official images stop their temporary server before the real one).
    confirm_after: float = 1.0
    pause: Callable[[float], None] = time.sleep

    def _svc(self, name: str) -> dict[str, Any]:
        return dict(self.model["services"][name])

    def _test(self, name: str) -> list[str] | None:
        hc = self._svc(name).get("healthcheck") or {}
        if hc.get("disable"):
            return None
        test = hc.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        return list(test) if test and test[0] != "NONE" else None

    def _timeout(self, name: str) -> float:
        return _seconds((self._svc(name).get("healthcheck") or {}).get("timeout"), 30.0)

    def _set(self, st: Status, **kw: Any) -> None:
        before = (st.state, st.health, st.ready, st.failed)
        for k, v in kw.items():
            setattr(st, k, v)
        if st.ready and st.ready_after is None:
            st.ready_after = time.monotonic() - self.started
        if self.on_change and (st.state, st.health, st.ready, st.failed) != before:
            self.on_change(st)

    def _kind(self, name: str) -> str:
        from .kinds import kind_of

        return kind_of(self._svc(name))

    def rule(self, name: str) -> str:
        """Which rule judges this service: compose check / the kind's TCP query / probe / running."""
        return rule(self._svc(name), self.probes.get(name), name in self.one_shot)

    def _exec(self, argv: list[str], timeout: float, stdin: str | None = None) -> tuple[bool, str]:
        from invoke.exceptions import CommandTimedOut

        kw: dict[str, Any] = {"timeout": timeout}
        if stdin is not None:
            from .compose import Script

            kw["in_stream"] = Script(stdin)
        try:
            r = run(self.c, argv, **kw)
        except CommandTimedOut:
            return False, f"check timed out after {timeout:.0f} s"
        out = (r.stdout + r.stderr).strip()
        return bool(r.ok), out or f"exit {r.return_code}"

    def _run_check(self, st: Status, engine_healthy: bool = False) -> tuple[bool, str, str]:
        """(ready, output, detail) of one check round. The compose healthcheck (or, without one,
        a configured probe) runs first, unless the engine already says healthy; a database of a
        known kind must then answer its TCP query, twice, ``confirm_after`` apart.
        Raises _Refused when the database refuses the credentials from its environment."""
        name = st.service
        test = self._test(name)
        kind = self._kind(name)
        ready = ready_argv(st.container, kind, self._svc(name))
        passed = []
        if test and not engine_healthy:
            argv = check_argv(st.container, test)
            assert argv is not None
            ok, out = self._exec(argv, self._timeout(name))
            if not ok:
                return False, out, "starting: check not passing yet"
            passed.append("check passed")
        elif engine_healthy:
            out = ""
            passed.append("engine")
        elif name in self.probes:
            ok, out = self._exec(probe_argv(self.probes[name]), 5.0)
            if not ok:
                return False, out, "starting: probe not passing yet"
            passed.append("probe passed")
        elif ready is None:
            return True, "no healthcheck: running counts as ready", "no healthcheck: running counts as ready"
        if ready is not None:
            argv, stdin = ready
            for attempt in range(2):
                if attempt:
                    self.pause(self.confirm_after)
                ok, out = self._exec(argv, READY_TIMEOUT, stdin)
                if not ok and REFUSED.search(out):
                    raise _Refused(out)
                if not ok:
                    return False, out, f"starting: {kind} does not answer a query over TCP yet"
            passed.append(f"{kind} answers over TCP")
        return True, out, f"healthy ({', '.join(passed)})"

    def poll(self, services: Iterable[str], active: set[str] | None = None) -> bool:
        """One round: refresh every service's status; True when all are ready.
        Raises HealthError at once for a service that exited, crash-loops or is unhealthy.
        With ``active``, only those services are judged: the others have not been (re)started
        by this run yet, so an old container of theirs (stopped, or healthy with an old config)
        says nothing about them."""
        services = list(services)
        rows = {r.get("Service"): r for r in self.compose.ps(self.c, services)}
        to_check: list[Status] = []
        for name in services:
            st = self.statuses.setdefault(name, Status(name))
            if st.ready:
                continue
            if active is not None and name not in active:
                self._set(st, state="waiting", detail="waiting for its dependencies")
                continue
            row = rows.get(name)
            if row is None:
                self._set(st, state="pending", detail="no container yet")
                continue
            state, health = row.get("State", ""), row.get("Health", "")
            self._set(st, state=state, health=health, container=row.get("Name") or row.get("ID", ""))
            if state == "exited" and name in self.one_shot and str(row.get("ExitCode")) == "0":
                self._set(st, ready=True, detail="completed successfully")
            elif state in ("exited", "dead"):
                self._set(st, failed=True, detail=f"container {state} with code {row.get('ExitCode')}")
            elif state == "restarting":
                self._set(st, failed=True, detail="container is restarting (crash loop)")
            elif health == "unhealthy":
                self._set(st, failed=True, detail="the engine marked it unhealthy")
            elif health == "healthy" and self._kind(name) not in READY_KINDS:
                self._set(st, ready=True, detail="healthy (engine)")
            elif state == "running":
                to_check.append(st)
        pending = []
        for st in to_check:
            fut = self.inflight.get(st.service)
            if fut is None:
                self.inflight[st.service] = fut = self.pool.submit(self._run_check, st, st.health == "healthy")
            pending.append((st, fut))
        if pending and self.settle > 0:  # a quick check is judged this round, not one interval later
            from concurrent.futures import wait as wait_futures

            wait_futures([f for _, f in pending], timeout=self.settle)
        for st, fut in pending:
            if fut.done():
                del self.inflight[st.service]
                try:
                    ok, out, detail = fut.result()
                except _Refused as e:
                    st.output = str(e)
                    self._set(st, failed=True, detail=f"it answers over TCP but refuses the credentials from its "
                                                      f"container's environment (the database keeps the password it "
                                                      f"was first initialised with: put that value back in the env "
                                                      f"file, or change the password inside the database too)")
                    continue
                st.output = out
                self._set(st, ready=ok, detail=detail)
        failed = [self.statuses[s] for s in services if self.statuses[s].failed]
        if failed:
            raise HealthError(self.report(failed))
        return all(self.statuses[s].ready for s in services)

    def judge(self, rows: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
        """The tool's own verdict on each running service of ``rows`` (compose ps rows by service):
        one round of the same check `up` uses, all services at once, each bounded by its check's
        timeout; service -> (verdict, detail). Verdicts: ``healthy`` (its check, probe or query
        passed), ``-`` (no check: running is all it can say), ``not ready`` and ``unhealthy`` (the
        engine marked it unhealthy, or the database refuses its own credentials). `status` shows
        this rather than the engine's word, which lags by up to one healthcheck interval."""
        from concurrent.futures import wait as wait_futures

        futures: dict[str, Future[tuple[bool, str, str]]] = {}
        for name, row in rows.items():
            if row.get("State") != "running" or name not in self.model.get("services", {}):
                continue
            st = Status(name, state="running", health=str(row.get("Health") or ""),
                        container=str(row.get("Name") or row.get("ID", "")))
            futures[name] = self.pool.submit(self._run_check, st, st.health == "healthy")
        wait_futures(list(futures.values()))
        out: dict[str, tuple[str, str]] = {}
        for name, fut in futures.items():
            engine = str(rows[name].get("Health") or "")
            try:
                ok, output, detail = fut.result()
            except _Refused:
                out[name] = ("unhealthy", "it answers over TCP but refuses the credentials from its container's "
                                          "environment")
                continue
            if ok:
                out[name] = ("-" if self.rule(name) == "running" else "healthy", "")
            else:
                why = detail.removeprefix("starting: ")
                last = self.compose.scrub(output).strip().splitlines()[-1:] if output else []
                out[name] = ("unhealthy" if engine == "unhealthy" else "not ready",
                             why + (f" ({last[0][:120]})" if last else ""))
        self.pool.shutdown(wait=False)
        return out

    def close(self) -> None:
        """Stop waiting for in-flight checks (each is bounded by its own timeout)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.inflight.clear()

    def engine_output(self, st: Status) -> str:
        if not st.container:
            return ""
        r = run(self.c, ["docker", "inspect", "--format", "{{json .State.Health}}", st.container])
        import json

        try:
            log = (json.loads(r.stdout) or {}).get("Log") or []
        except ValueError:
            return ""
        return str(log[-1].get("Output", "")).strip() if log else ""

    def report(self, bad: list[Status], timed_out: float | None = None) -> str:
        parts = []
        for st in bad:
            why = st.detail if not timed_out else f"not ready after {timed_out:.0f} s ({st.detail or st.state})"
            out = self.compose.scrub(st.output or self.engine_output(st)) or "(no output)"
            logs = self.compose.logs(self.c, st.service, 50) or "(no log lines)"
            parts.append(f"Service {st.service!r} failed: {why}.\n"
                         f"--- last health-check output ---\n{out}\n"
                         f"--- last 50 log lines ---\n{logs}")
        cmd = "`, `".join(f"memstack-ops logs --service {s.service}" for s in bad)
        return ("\n\n".join(parts) + f"\n\nThe stack was left as it is for inspection: see `{cmd}`, "
                f"fix the cause, then run `up` again (or `down` to stop it).")

    def wait(self, services: Iterable[str], deadline: float, interval: float,
             sleep: Callable[[float], None] = time.sleep, max_polls: int | None = None,
             before_poll: Callable[[], None] | None = None, active: set[str] | None = None) -> None:
        """Poll until every service is ready, bounded by ``deadline`` (monotonic) and a poll count.
        ``before_poll`` runs at the start of each round (``up`` starts newly unblocked services there)."""
        import tenacity

        services = list(services)
        budget = max(0.0, deadline - time.monotonic())
        max_polls = max_polls or int(budget / interval) + 2

        def round_() -> bool:
            if before_poll:
                before_poll()
            return self.poll(services, active)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(budget) | tenacity.stop_after_attempt(max_polls),
            wait=tenacity.wait_fixed(interval),
            retry=tenacity.retry_if_result(lambda done: not done),
            sleep=sleep,
        )
        try:
            retrying(round_)
        except tenacity.RetryError:
            bad = [self.statuses.setdefault(s, Status(s)) for s in services]
            bad = [st for st in bad if not st.ready]
            raise HealthError(self.report(bad, timed_out=time.monotonic() - self.started)) from None
        finally:
            self.close()

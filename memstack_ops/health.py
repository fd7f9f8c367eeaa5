"""Health gating: is each service really ready?

A service is ready when its own compose healthcheck passes. We read the engine's status and,
because the engine only re-runs a check every ``interval`` (10 s in the seeds), we also run the
very same check ourselves with ``docker exec`` as soon as the container runs, so a ready service
is seen within one poll instead of at the engine's next tick. Services without a healthcheck use
a configured probe (``tcp:PORT`` or an ``http://`` URL, run on the engine's host) or, failing
that, count as ready once running. A database of a kind the tool knows must in addition answer a
real request over TCP inside its container, twice (``kinds.ready``), with or without a
healthcheck. A container that exits, crash-loops or that the engine marks unhealthy fails the
wait at once. Polling is bounded by tenacity (time and attempts).

Everything goes through ``c.run`` so the same code runs on a remote host through fabric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .compose import Compose, run, unescape
from .errors import HealthError
from .kinds import READY_KINDS, kind_of, password_var, ready_argv, refused


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


def test_argv(test: list[str]) -> list[str] | None:
    """The command a compose healthcheck ``test`` runs in its container (None: no test).

    ``compose config`` re-escapes a literal ``$`` as ``$$`` (so its output can be parsed again);
    the engine runs the test with single ``$``, and so must we."""
    if not test or test[0] == "NONE":
        return None
    test = [unescape(a) for a in test]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return test[1:]
    return ["/bin/sh", "-c", " ".join(test)]


def check_argv(container: str, test: list[str]) -> list[str] | None:
    """The docker exec argv that runs a compose healthcheck ``test`` in ``container``."""
    argv = test_argv(test)
    return None if argv is None else ["docker", "exec", container, *argv]


def rule(service: Mapping[str, Any], probe: str | None = None, one_shot: bool = False) -> str:
    """Which rule judges the readiness of one service (shown by `status`)."""
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


KEEPS_RUNNING = ("always", "unless-stopped")  # restart policies of services that must never exit


def ends_by_exiting(service: Mapping[str, Any], probe: str | None = None, one_shot: bool = False) -> bool:
    """Whether exiting with code 0 is this service's success: a one-shot job. Certainly so when
    others wait for it with ``service_completed_successfully`` (``one_shot``); also for a
    service nothing else judges (no healthcheck, no probe, no kind with a query) whose restart
    policy does not keep it running. Such a service counts as ready while it runs and as done
    once it exited 0; a non-zero exit is a failure."""
    if one_shot:
        return True
    return rule(service, probe) == "running" and service.get("restart") not in KEEPS_RUNNING


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


def poll(ready: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Call ``ready`` every ``interval`` s until it returns True (then True), bounded by ``timeout``
    seconds and as many attempts as fit in them (then False). Its exceptions go through."""
    import tenacity

    try:
        tenacity.Retrying(stop=tenacity.stop_after_delay(timeout)
                          | tenacity.stop_after_attempt(int(timeout / interval) + 2),
                          wait=tenacity.wait_fixed(interval), retry=tenacity.retry_if_result(lambda ok: not ok))(ready)
    except tenacity.RetryError:
        return False
    return True


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
    inflight: dict[str, Future[tuple[bool, str, str]]] = field(default_factory=dict)
    settle: float = 0.25  # how long a round waits for the checks it started (most take < 0.1 s)
    # A database's TCP query must pass twice, this far apart: an image's init server can answer
    # once and then restart (the official images stop their temporary server before the real one).
    confirm_after: float = 1.0
    pause: Callable[[float], None] = time.sleep
    # called (from a check's thread) when a check passes: `up` wakes its wait so the next round,
    # and the start of what waited for that service, come at once instead of after the interval
    on_pass: Callable[[], None] | None = None

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
        return kind_of(self._svc(name))

    def rule(self, name: str) -> str:
        """Which rule judges this service: compose check / the kind's TCP query / probe / running."""
        return rule(self._svc(name), self.probes.get(name), name in self.one_shot)

    def ends_by_exiting(self, name: str) -> bool:
        return ends_by_exiting(self._svc(name), self.probes.get(name), name in self.one_shot)

    def mark_done(self, name: str, detail: str) -> None:
        """A one-shot job that needs no run now (it completed before and its definition is unchanged)."""
        st = self.statuses.setdefault(name, Status(name))
        self._set(st, state="exited", ready=True, detail=detail)

    def mark_ready(self, name: str, detail: str) -> None:
        """A service another check just found ready (a start-first rollout's health gate)."""
        st = self.statuses.setdefault(name, Status(name))
        self._set(st, state="running", ready=True, detail=detail)

    def recheck(self, services: Iterable[str]) -> None:
        """Judge again services that were ready by running but may end by exiting (jobs nothing
        waits for): one that has exited non-zero (or crash-loops) by now fails the wait, with its
        logs; exit 0 is done."""
        services = [s for s in services if self.ends_by_exiting(s) and s not in self.one_shot]
        if not services:
            return
        rows = {r.get("Service"): r for r in self.compose.containers(self.c, services)}
        bad = []
        for name in services:
            row, st = rows.get(name), self.statuses.setdefault(name, Status(name))
            state, code = (row or {}).get("State", ""), str((row or {}).get("ExitCode"))
            if state in ("exited", "dead") and code != "0" or state == "restarting":
                st.ready = False
                self._set(st, state=state, failed=True,
                          detail=f"it exited with code {code} after it had started" if state != "restarting"
                          else "container is restarting (crash loop)")
                bad.append(st)
            elif state == "exited":
                self._set(st, state=state, detail="completed successfully")
        if bad:
            raise HealthError(self.report(bad))

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

    def check_container(self, name: str, container: str, engine_health: str = "") -> tuple[bool, str, str]:
        """One round of the check `up` uses, on one given container of service ``name`` (a
        start-first rollout judges the new container while the old one still runs):
        (ready, output, detail). Raises HealthError when a database refuses its credentials."""
        try:
            return self._run_check(Status(name, state="running", health=engine_health, container=container),
                                   engine_health == "healthy")
        except _Refused as e:
            raise HealthError(f"{name} ({container}) answers over TCP but refuses the credentials from its "
                              f"container's environment: {e}") from None

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
                if not ok and refused(kind, out):
                    raise _Refused(out)
                if not ok:
                    return False, out, f"starting: {kind} does not answer a query over TCP yet"
            passed.append(f"{kind} answers over TCP")
        return True, out, f"healthy ({', '.join(passed)})"

    def _passed(self, fut: Future[tuple[bool, str, str]]) -> None:
        """A check that passed ends the wait for the next round (its dependants start at once)."""
        if self.on_pass is not None and not fut.cancelled() and fut.exception() is None and fut.result()[0]:
            self.on_pass()

    def _take(self, st: Status, fut: Future[tuple[bool, str, str]]) -> None:
        """Judge ``st`` by its finished check."""
        del self.inflight[st.service]
        try:
            ok, out, detail = fut.result()
        except _Refused as e:
            st.output = str(e)
            var = password_var(self._kind(st.service), self._svc(st.service))
            self._set(st, failed=True, detail=f"it answers over TCP but refuses the credentials from its "
                                              f"container's environment ({var or 'its password'}: the "
                                              f"database keeps the password it was first initialised with; "
                                              f"put that value back in the env file, or change the password "
                                              f"inside the database too)")
            return
        st.output = out
        self._set(st, ready=ok, detail=detail)

    def poll(self, services: Iterable[str], active: set[str] | None = None) -> bool:
        """One round: refresh every service's status; True when all are ready.
        Raises HealthError at once for a service that exited, crash-loops or is unhealthy.
        With ``active``, only those services are judged: the others have not been (re)started
        by this run yet, so an old container of theirs (stopped, or healthy with an old config)
        says nothing about them."""
        services = list(services)
        judged = [s for s in services if not self.statuses.setdefault(s, Status(s)).ready
                  and (active is None or s in active)]
        # nothing to judge this round (the rest waits for its start or a rollout): no listing. One
        # `docker ps` + `docker inspect` rather than `compose ps`, which loads the project every
        # round (a few times the CPU: it adds up on a host that several deploys share)
        rows = {r.get("Service"): r for r in self.compose.containers(self.c, services)} if judged else {}
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
            code = str(row.get("ExitCode"))
            if state == "exited" and code == "0" and self.ends_by_exiting(name):
                self._set(st, ready=True, detail="completed successfully")
            elif state in ("exited", "dead") and name in self.one_shot:
                self._set(st, failed=True, detail=f"the one-shot job exited with code {code} (its dependants wait "
                                                  f"for exit 0 and were not started)")
            elif state in ("exited", "dead"):
                self._set(st, failed=True, detail=f"container {state} with code {code}")
            elif state == "restarting":
                self._set(st, failed=True, detail="container is restarting (crash loop)")
            elif health == "unhealthy":
                self._set(st, failed=True, detail="the engine marked it unhealthy")
            elif state == "running" and name in self.one_shot:  # running is not done: only exit 0 is
                self._set(st, detail="one-shot job running: done when it exits 0")
            elif health == "healthy" and self._kind(name) not in READY_KINDS:
                self._set(st, ready=True, detail="healthy (engine)")
            elif state == "running":
                to_check.append(st)
        pending = []
        for st in to_check:
            fut = self.inflight.get(st.service)
            if fut is not None and fut.done():  # finished since the last round
                self._take(st, fut)
                if st.ready or st.failed:
                    continue
                fut = None  # not ready yet: the next check goes out now, not a round later
            if fut is None:
                self.inflight[st.service] = fut = self.pool.submit(self._run_check, st, st.health == "healthy")
                if self.on_pass is not None:
                    fut.add_done_callback(self._passed)
            pending.append((st, fut))
        if pending and self.settle > 0:  # a quick check is judged this round, not one interval later
            from concurrent.futures import wait as wait_futures

            wait_futures([f for _, f in pending], timeout=self.settle)
        for st, fut in pending:
            if fut.done():
                self._take(st, fut)
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
        # a round also comes early when a start or a passing check wakes it: at most a few per service
        max_polls = max_polls or int(budget / interval) + 2 + 4 * len(services)

        def round_() -> bool:
            if before_poll:
                before_poll()
            was = {s for s, st in self.statuses.items() if st.ready}
            done = self.poll(services, active)
            if before_poll and not done and {s for s, st in self.statuses.items() if st.ready} - was:
                before_poll()  # what waited for a service that just turned ready starts now, not an interval later
            return done

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

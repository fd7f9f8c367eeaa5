"""Compose lifecycle: up (health-gated, dependency layered), down, restart, status, urls.

Plain functions taking an invoke Context first; tasks only resolve settings and print.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compose import INSPECT_PROJECT, dependencies, run, topo_layers, validate_services
from .errors import ComposeError, MemstackError
from .health import Status, Watch
from .output import confirm, interactive, say
from .target import Target, target  # noqa: F401 - target: re-exported (older callers)
from .trace import trace


class Display:
    """Live per-service status: a rich table on a terminal, one plain line per change otherwise."""

    def __init__(self, services: Iterable[str]):
        self.services = list(services)
        self.statuses: dict[str, Status] = {}
        self.live: Any = None
        self.t0 = time.monotonic()

    def __enter__(self) -> Display:
        if interactive():
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def _table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"waiting for health ({time.monotonic() - self.t0:.0f} s)", title_justify="left")
        for col in ("service", "state", "health", "detail"):
            t.add_column(col)
        for s in self.services:
            st = self.statuses.get(s, Status(s))
            mark = "[green]ready[/]" if st.ready else "[red]failed[/]" if st.failed else st.health or "-"
            detail = (f"{st.detail} after {st.ready_after:.1f} s" if st.ready and st.ready_after is not None
                      else st.detail)
            t.add_row(s, st.state, mark, detail)
        return t

    def add(self, services: Iterable[str]) -> None:
        self.services += [s for s in services if s not in self.services]

    def __call__(self, st: Status) -> None:
        self.statuses[st.service] = st
        mark = "ready" if st.ready else "failed" if st.failed else st.state
        trace("up", f"# {st.service}: {mark}", time.monotonic())
        if self.live:
            self.live.update(self._table())
        elif st.ready:
            say(f"  {st.service}: ready after {st.ready_after or 0:.1f} s ({st.detail})")
        elif st.failed:
            say(f"  {st.service}: FAILED ({st.detail})")
        else:
            say(f"  {st.service}: {st.state}{' / ' + st.health if st.health else ''}")


def one_shot_services(model: Mapping[str, Any]) -> set[str]:
    """Services some other service waits on with condition service_completed_successfully."""
    out = set()
    for svc in model.get("services", {}).values():
        for dep, spec in (svc.get("depends_on") or {}).items():
            if (spec or {}).get("condition") == "service_completed_successfully":
                out.add(dep)
    return out


def up(t: Target, services: Iterable[str] = (), timeout: float | None = None,
       wait: bool = True, build: bool = False, sleep: Callable[[float], None] = time.sleep,
       preflight: Callable[[], None] | None = None) -> dict[str, Status]:
    """Start services (and what they depend on); each service starts as soon as all its own
    dependencies pass their healthchecks; wait until all are ready, or fail fast.

    ``preflight`` (the task's checks, running meanwhile) is waited for before anything changes;
    its error comes first when reading the stack failed too."""
    try:
        plan = _plan(t, services, wait)
    except MemstackError:
        if preflight is not None:
            preflight()  # the check's message names the cause (no engine, no compose, a bad file)
        raise
    if preflight is not None:
        preflight()
    model, names, deps, order, cond, rows, changed, current = plan
    timeout = float(timeout if timeout is not None else t.settings["timeout"])
    extra = ["--build"] if build else []
    if not wait:
        t.compose.check(t.c, "up", "--detach", *extra, *order, what="Starting the stack")
        return {}
    from . import proxy as edge
    from . import rollout

    rollable = rollout.check_rollable(model, order)
    rolling = set(changed) & set(rollable)
    # unchanged and healthy by the engine's own check: ready without a round of ours (a database
    # kind still gets its query from the watch)
    healthy = {str(r.get("Service")) for r in rows if r.get("State") == "running" and r.get("Health") == "healthy"
               and not rollout.stateful(model["services"][str(r.get("Service"))])}
    px = edge.Proxy(t, model) if edge.proxy_service(model) else None
    if px is not None:
        px.apply(rows=rows)
    watch = Watch(t.c, t.compose, model, probes=t.probes, one_shot=one_shot_services(model))
    started: set[str] = set()  # compose up submitted
    active: set[str] = set()  # compose up completed: only these are judged by the watch
    inflight: dict[Future[Any], list[str]] = {}
    # One-shot jobs that completed in an earlier `up` with the same definition are not run again
    # (a job named with --service is); they count as done from the start.
    done = completed_jobs(t, [s for s in order if s in watch.one_shot and s not in set(services)])
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose-up")
    # Services with no container yet that do not start at once: created in the background (one
    # `compose up --no-start` queued after the first start), so when their dependencies are ready
    # they start with one `docker start` (~0.2 s) instead of a compose run (1-2 s on a busy
    # machine: it loads the project again). Not with --build (images change), never for a service
    # that has a container (compose would recreate it early: stop a running old one).
    have = {str(r.get("Service")) for r in rows}
    fresh = [s for s in order if s not in have and s not in done and s not in rolling] if not build else []
    created: dict[str, list[str]] = {}  # fresh service -> its created containers' names
    creating: list[Future[Any]] = []
    starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docker-start")

    def pre_create(svcs: list[str]) -> None:
        try:
            r = t.compose.run(t.c, "up", "--no-start", "--no-deps", *svcs)
            rows = t.compose.containers(t.c, svcs) if r.ok else []
        except MemstackError:
            rows = []  # each service then starts through compose, which says what is wrong
        for row in rows:
            if row.get("State") == "created":
                created.setdefault(str(row["Service"]), []).append(str(row["Name"]))

    def start_created(svcs: list[str]) -> Any:
        names = [n for s in svcs for n in created[s]]
        r = run(t.c, ["docker", "start", *names], timeout=120)
        if r.failed:  # removed meanwhile, or a port taken: compose redoes it and says what is wrong
            return t.compose.check(t.c, "up", "--detach", "--no-deps", *svcs, what=f"Starting {', '.join(svcs)}")
        return svcs
    # rollouts of several services at once (each its own new container, gate and drain; the
    # proxy changes one at a time, Proxy.lock)
    rollers = ThreadPoolExecutor(max_workers=max(1, len(rolling)), thread_name_prefix="rollout")
    notes: list[str] = []  # what a rollout undid after a Ctrl-C (said in the one line)
    wake = threading.Event()  # a start, rollout or passing check finished: the next round need not wait the interval
    watch.on_pass = wake.set

    def nap(seconds: float) -> None:
        wake.wait(seconds)
        wake.clear()

    def start_unblocked() -> None:
        for f in [f for f in inflight if f.done()]:
            batch = inflight.pop(f)
            rolled = f.result()  # a failed `compose up` surfaces here, with compose's own message
            active.update(batch)
            if isinstance(rolled, rollout.Rolled):  # its gate just passed: no second round needed
                watch.mark_ready(rolled.service, f"healthy, rolled out start-first ({rolled.detail})")
        while True:  # a current service marked ready here may unblock its dependants at once
            ready = {s for s, st in watch.statuses.items() if st.ready}
            batch = [s for s in order if s not in started
                     and all(d in (active if cond[s].get(d) == "service_started" else ready) for d in deps[s])]
            progress = False
            for s in [s for s in batch if s in done]:
                batch.remove(s)
                started.add(s)
                active.add(s)
                watch.mark_done(s, "completed in an earlier up, definition unchanged: not run again")
                progress = True
            for s in [s for s in batch if s in current]:
                batch.remove(s)
                started.add(s)
                active.add(s)
                progress = True
                if s in healthy:  # the engine said healthy when this run began, and nothing changes it
                    watch.mark_ready(s, "healthy (engine), unchanged: no compose call")
            if not progress:
                break
        for s in [s for s in batch if s in rolling]:
            batch.remove(s)
            started.add(s)
            f = rollers.submit(rollout.roll, t, model, s, timeout, px, sleep, notes)
            f.add_done_callback(lambda _: wake.set())
            inflight[f] = [s]
        if px is not None and px.service in batch:
            px.apply()  # its upstreams are ready by now: it starts with them
        if creating and creating[0].done():
            quick = [s for s in batch if created.get(s)]
            if quick:
                for s in quick:
                    batch.remove(s)
                started.update(quick)
                f = starter.submit(start_created, quick)
                f.add_done_callback(lambda _: wake.set())
                inflight[f] = quick
        if batch:
            started.update(batch)
            # --no-deps: we order and gate the start ourselves; compose would otherwise wait for
            # the engine's next healthcheck tick (10 s in the seeds) before starting dependants.
            # In the background, so polling the services already started goes on meanwhile.
            f = pool.submit(t.compose.check, t.c, "up", "--detach", "--no-deps", *extra, *batch,
                            what=f"Starting {', '.join(batch)}")
            f.add_done_callback(lambda _: wake.set())
            inflight[f] = batch
        later = [s for s in fresh if s not in started]
        if later and not creating:
            creating.append(pool.submit(pre_create, later))

    try:
        with Display(order) as display:
            watch.on_change = display
            # a rollout's health gate has `timeout` itself; its drain and the old container's stop come on top
            more = sum(rollout.drain_timeout(t, model["services"][s]) + rollout.grace(model["services"][s]) + 30
                        for s in rolling)
            watch.wait(order, time.monotonic() + timeout + more, float(t.settings["interval"]),
                       sleep=nap if sleep is time.sleep else sleep,
                       before_poll=start_unblocked, active=active)
            # a job nothing waits for counted as ready while it ran: one that failed since fails `up`
            watch.recheck(order)
    except BaseException:
        pool.shutdown(wait=True)
        # containers created ahead for services that never started: gone again, as if never made,
        # with the anonymous volumes their create made (they hold the image's files, nothing else;
        # `docker rm` without -f leaves a container that runs meanwhile alone)
        left = [n for s, names in created.items() if s not in started for n in names]
        if left:
            run(t.c, ["docker", "rm", "-v", *left], timeout=60)
        raise
    finally:
        pool.shutdown(wait=True)
        starter.shutdown(wait=True)
        rollers.shutdown(wait=True)
        if notes:
            from .interrupt import undone

            for note in notes:
                undone(note)
    for f in inflight:
        f.result()
    if px is not None and set(started) - set(current) - set(done) - rolling:
        px.apply()  # upstreams: the containers that run now (a service started fresh)
    return watch.statuses


def _plan(t: Target, services: Iterable[str], wait: bool) -> tuple[Any, ...]:
    """What ``up`` reads before it changes anything: the model, the services in start order with
    their dependencies and conditions, and (waiting) what runs: changed and current services.
    Start-first services (rollout.py) that run and changed are rolled, not recreated; refused
    before anything starts when they cannot run twice."""
    from . import rollout

    model = t.compose.model(t.c)
    names = validate_services(model, services, t.stack.name)
    deps = dependencies(model, names)
    order = [s for layer in topo_layers(deps) for s in layer]  # also rejects cycles
    # depends_on conditions: service_started needs the dependency started by this run; healthy
    # and completed_successfully need it ready (healthy, or exited 0 for one-shot services).
    cond = {s: {d: str((spec or {}).get("condition", "service_started"))
                for d, spec in (model["services"][s].get("depends_on") or {}).items()} for s in deps}
    if not wait:
        return model, names, deps, order, cond, [], [], []
    rollout.check_rollable(model, order)
    rows = t.compose.containers(t.c, order)  # what runs: one docker listing, shared below
    # current: running, one container, made from today's definition and image (`compose up` would change nothing)
    changed, current = rollout.survey(t, model, order, rows)
    return model, names, deps, order, cond, rows, changed, current


CONFIG_HASH = re.compile(r"(?:^|,)com\.docker\.compose\.config-hash=([0-9a-f]+)")


def completed_jobs(t: Target, jobs: list[str]) -> set[str]:
    """Those of ``jobs`` whose container exited 0 and was made from the current definition
    (compose's config hash label equals `compose config --hash`)."""
    if not jobs:
        return set()
    rows = [r for r in t.compose.ps(t.c, jobs) if r.get("State") == "exited" and str(r.get("ExitCode")) == "0"]
    if not rows:
        return set()
    r = t.compose.run(t.c, "config", "--hash", ",".join(sorted({str(r.get("Service")) for r in rows})))
    want = dict(line.split(None, 1) for line in r.stdout.splitlines() if len(line.split()) == 2) if r.ok else {}
    out = set()
    for row in rows:
        m = CONFIG_HASH.search(str(row.get("Labels") or ""))
        if m and want.get(str(row.get("Service"))) == m.group(1):
            out.add(str(row["Service"]))
    return out


def down(t: Target, volumes: bool = False, yes: bool = False) -> list[Anonymous]:
    """Stop and remove the stack's containers; with ``volumes``, its volumes too (after the typed
    confirmation). Returns the anonymous volumes a plain down leaves behind (see
    ``anonymous_volumes``; with ``volumes`` compose removes them, so none)."""
    if volumes:
        vols = sorted(t.compose.model(t.c).get("volumes", {}) or {})
        confirm(f"This deletes ALL data of stack {t.stack.name!r} (project {t.stack.project}): "
                f"volumes {', '.join(vols) or '(none)'}.", t.stack.name, yes=yes)
        t.compose.check(t.c, "down", "--volumes", "--remove-orphans", what="Stopping and removing data")
        return []
    left = anonymous_volumes(t)  # read before: once the containers are gone, nothing points at them
    t.compose.check(t.c, "down", "--remove-orphans", what="Stopping the stack")
    return left


@dataclass(frozen=True)
class Anonymous:
    """An anonymous volume: the engine's name for it, and the service and path that mount it."""

    volume: str
    service: str
    path: str


# the project's containers (one-off ones too: `down --remove-orphans` removes them as well), one
# line each through compose.INSPECT_PROJECT: name, labels, mounts
MOUNTS_FORMAT = "{{json .Name}}\t{{json .Config.Labels}}\t{{json .Mounts}}"


def named_volumes(t: Target, model: Mapping[str, Any]) -> set[str]:
    """Engine names of the stack's named volumes (the compose model's top-level ``volumes:``;
    compose names one ``<project>_<key>`` unless it says ``name:``)."""
    return {str((spec or {}).get("name") or f"{t.stack.project}_{key}")
            for key, spec in (model.get("volumes") or {}).items()}


def anonymous_volumes(t: Target, containers: Iterable[str] = (),
                      model: Mapping[str, Any] | None = None) -> list[Anonymous]:
    """The volumes the project's containers (or just ``containers``) mount that are none of its
    named volumes: those the engine made for an image's ``VOLUME`` (or a ``volumes: - /path`` entry
    without a name) that no named volume covers. Compose never reattaches them to a new container,
    and once the containers are removed nothing points at them. One ``docker ps`` + ``docker
    inspect`` (one shell: one round trip on a host), or with ``containers`` one ``docker inspect``
    of them; the compose model (unless given) only when
    some container mounts a volume. Best effort: [] when the engine or the compose files cannot be
    read (compose then says what is wrong)."""
    import json

    names = list(containers)
    if names:
        r = run(t.c, ["docker", "inspect", "--type", "container", "--format", MOUNTS_FORMAT, *names], timeout=60)
    else:
        r = run(t.c, ["sh", "-c", INSPECT_PROJECT, "sh", t.stack.project, MOUNTS_FORMAT], timeout=60)
    found: list[Anonymous] = []
    for line in r.stdout.splitlines() if r.ok else []:
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        try:
            name, labels, mounts = json.loads(parts[0]), json.loads(parts[1]) or {}, json.loads(parts[2]) or []
        except ValueError:
            continue
        service = str(labels.get("com.docker.compose.service") or str(name).lstrip("/"))
        found += [Anonymous(str(m["Name"]), service, str(m.get("Destination") or ""))
                  for m in mounts if m.get("Type") == "volume" and m.get("Name")]
    if not found:
        return []
    try:
        named = named_volumes(t, model if model is not None else t.compose.model(t.c))
    except MemstackError:
        return []
    return sorted({a for a in found if a.volume not in named}, key=lambda a: (a.service, a.path, a.volume))


def anonymous_note(t: Target, left: Iterable[Anonymous], by: str = "down") -> str:
    """One paragraph for the anonymous volumes ``by`` (``down``, or a rollout: ``the rollout of
    api``) left behind: each volume in full (the thing to act on), the service and path that used
    it, and what to do about it."""
    by_volume: dict[str, list[Anonymous]] = {}
    for a in left:
        by_volume.setdefault(a.volume, []).append(a)
    n = len(by_volume)
    if not n:
        return ""
    one = n == 1
    it, them = ("it", "it holds") if one else ("them", "they hold")
    listed = ", ".join(f"{v} (service {', '.join(dict.fromkeys(a.service for a in users))}, "
                       f"{', '.join(dict.fromkeys(a.path for a in users))})" for v, users in by_volume.items())
    paths = ", ".join(dict.fromkeys(a.path for users in by_volume.values() for a in users))
    on = f" on {t.where}" if t.remote else ""
    head = f"{by} left {n} anonymous volume{'' if one else 's'}{on}: {listed}."
    rm = f"If {them} nothing you need: `docker volume rm {' '.join(by_volume)}`{on}."
    if by == "down":
        return (f"{head} Compose will not reuse {it}: the next `up` makes {'a new one' if one else 'new ones'}, "
                f"and `down --volumes` can no longer find {it}. {rm} To keep this data across `down`, map a "
                f"named volume to {paths} in the compose file; to delete it with the stack, run `down --volumes` "
                f"instead of `down` (it deletes the stack's named volumes too).")
    return (f"{head} The new container has {'a new one' if one else 'new ones'}: a start-first rollout never "
            f"lets two containers share one, and nothing reattaches {it}. {rm} To keep this data across deploys, "
            f"map a named volume to {paths} in the compose file.")


def reset(t: Target, services: Iterable[str], yes: bool = False, force_prod: bool = False,
          timeout: float | None = None) -> list[str]:
    """Wipe the data of ``services`` (their named volumes, and the anonymous volumes of their
    containers) and bring them back empty and healthy,
    with the services that depend on them stopped meanwhile and started again afterwards."""
    from .compose import dependants, run, volumes_of
    from .errors import Refused

    model = t.compose.model(t.c)
    names = validate_services(model, services, t.stack.name)
    if not list(services):
        raise Refused("Name the service(s) to reset, e.g. `reset milvus`: resetting a whole stack is "
                      "`down --volumes`.")
    if t.stack.stage == "prod" and not force_prod:
        raise Refused(f"reset {', '.join(names)} refused in stage prod: it deletes all of their data. Take a "
                      f"backup first, then add --force-prod if you really mean it.")
    vols = sorted({v for s in names for v in volumes_of(model, s)})
    deps = dependants(model, names)
    confirm(f"This deletes ALL data of {', '.join(names)} in stack {t.stack.name!r} (volumes "
            f"{', '.join(vols) or 'none'})" + (f"; {', '.join(deps)} will be stopped meanwhile." if deps else "."),
            t.stack.name, yes=yes)
    if deps:
        t.compose.check(t.c, "stop", *deps, what=f"Stopping {', '.join(deps)}")
    t.compose.check(t.c, "rm", "--stop", "--force", "--volumes", *names, what=f"Removing {', '.join(names)}")
    for v in vols:
        r = run(t.c, ["docker", "volume", "rm", v])
        if r.failed and "No such volume" not in r.stderr:
            raise ComposeError(f"Removing volume {v} failed: {r.stderr.strip()}. The services are stopped; "
                               f"free the volume and run `reset` again, or `up` to start them as they are.")
    up(t, [*names, *deps], timeout=timeout)
    return vols


def restart(t: Target, services: Iterable[str] = (), timeout: float | None = None,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, Status]:
    model = t.compose.model(t.c)
    names = validate_services(model, services, t.stack.name)
    t.compose.check(t.c, "restart", *services, what=f"Restarting {', '.join(names)}")
    watch = Watch(t.c, t.compose, model, probes=t.probes, one_shot=one_shot_services(model))
    deadline = time.monotonic() + float(timeout if timeout is not None else t.settings["timeout"])
    with Display(names) as display:
        watch.on_change = display
        watch.wait(names, deadline, float(t.settings["interval"]), sleep=sleep)
    return watch.statuses


def _ports(row: Mapping[str, Any]) -> str:
    pubs = row.get("Publishers") or []
    return ", ".join(sorted({f"{p.get('URL') or '*'}:{p['PublishedPort']}->{p['TargetPort']}"
                             for p in pubs if p.get("PublishedPort")}))


def usage(t: Target, containers: Iterable[str]) -> dict[str, tuple[float, float]]:
    """CPU and memory use in percent per container (one `docker stats --no-stream` call)."""
    import json

    from .compose import run

    containers = list(containers)
    if not containers:
        return {}
    r = run(t.c, ["docker", "stats", "--no-stream", "--format", "{{json .}}", *containers], timeout=30)
    out = {}
    for line in r.stdout.splitlines() if r.ok else []:
        try:
            row = json.loads(line)
            out[row["Name"]] = (float(row["CPUPerc"].rstrip("%")), float(row["MemPerc"].rstrip("%")))
        except (ValueError, KeyError):
            continue
    return out


def containers_state(t: Target, names: Iterable[str]) -> dict[str, tuple[int, int, bool]]:
    """(restart count, exit code, OOM-killed) per container name (one `docker inspect`; a
    container removed meanwhile is just missing)."""
    from .compose import run

    names = list(names)
    if not names:
        return {}
    r = run(t.c, ["docker", "inspect", "--format",
                  "{{.Name}}|{{.RestartCount}}|{{.State.ExitCode}}|{{.State.OOMKilled}}", *names], timeout=30)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.strip().lstrip("/").split("|")
        if len(parts) == 4 and parts[1].isdigit() and parts[2].lstrip("-").isdigit():
            out[parts[0]] = (int(parts[1]), int(parts[2]), parts[3] == "true")
    return out


def _uptime(row: Mapping[str, Any]) -> str:
    """How long the container has been up, from the engine's own `Status` ("Up 3 seconds
    (healthy)", computed from State.StartedAt on the engine's clock). `RunningFor` counts from
    creation, which says "9 minutes" for a container restarted 3 s ago."""
    import re

    status = str(row.get("Status") or "")
    if row.get("State") != "running" or not status.startswith("Up "):
        return ""
    return re.sub(r"\s*\((?:healthy|unhealthy|health: starting|Paused)\)$", "", status[3:])


def _finished_job(t: Target, svc: Mapping[str, Any], name: str, one_shot: set[str]) -> bool:
    """A service that is done when it exited 0 (health.ends_by_exiting)."""
    from .health import ends_by_exiting

    return ends_by_exiting(svc, t.probes.get(name), name in one_shot)


def status(t: Target) -> tuple[list[list[str]], list[str], list[str]]:
    """Rows: service, state (with the exit code of a stopped container), health, judged by,
    restarts, ports, uptime, cpu, mem, image, detail (defined-but-absent services too); alert
    lines for containers above the CPU/memory thresholds; and one line per service that should
    run and does not (one-shot jobs that exited 0 are fine). "health" is the tool's own verdict
    (one round of the check `up` uses, by the rule in "judged by", health.rule): the engine re-runs
    its healthcheck only every interval, so it still says "starting" for a while after `up` saw the
    service healthy. The engine's word is in "detail"."""
    from .health import rule

    model = t.compose.model(t.c)
    one_shot = one_shot_services(model)
    rows = {str(r.get("Service")): r for r in t.compose.ps(t.c)}
    verdicts = Watch(t.c, t.compose, model, probes=t.probes, one_shot=one_shot, confirm_after=0).judge(rows)
    stats = usage(t, [r["Name"] for r in rows.values() if r.get("State") == "running" and r.get("Name")])
    inspected = containers_state(t, [r["Name"] for r in rows.values() if r.get("Name")])
    cpu_max, mem_max = float(t.settings["cpu_alert_pct"]), float(t.settings["mem_alert_pct"])
    out: list[list[str]] = []
    alerts: list[str] = []
    down: list[str] = []
    for name, svc in model.get("services", {}).items():
        r = rows.get(name)
        judged = rule(svc, t.probes.get(name), name in one_shot)
        if r is None:
            out.append([name, "not created", "", judged, "", "", "", "", "", svc.get("image", ""), ""])
            down.append(f"{name}: not created")
            continue
        state, health = str(r.get("State", "")), str(r.get("Health", "") or "")
        restarts, code, oom = inspected.get(str(r.get("Name", "")), (None, r.get("ExitCode"), False))
        shown = state
        if state in ("exited", "dead"):
            shown = f"{state} ({code})" + (" OOM-killed" if oom else "")
            if not (state == "exited" and str(code) == "0" and _finished_job(t, svc, name, one_shot)):
                down.append(f"{name}: {state} with code {code}" + (" (killed: out of memory)" if oom else
                                                                    " (killed)" if str(code) == "137" else ""))
        elif state != "running":
            down.append(f"{name}: {state}")
        elif health == "unhealthy":
            down.append(f"{name}: running but unhealthy")
        cpu, mem = stats.get(r.get("Name", ""), (None, None))
        if cpu is not None and cpu >= cpu_max:
            alerts.append(f"{name}: CPU {cpu:.0f}% is over the {cpu_max:g}% alert threshold")
        if mem is not None and mem >= mem_max:
            alerts.append(f"{name}: memory {mem:.0f}% of its limit is over the {mem_max:g}% alert threshold")
        verdict, why = verdicts.get(name, ("-", ""))
        detail = f"engine: {health or 'no healthcheck'}" if state == "running" else ""
        out.append([name, shown, verdict, judged, "" if restarts is None else str(restarts), _ports(r),
                    _uptime(r), "" if cpu is None else f"{cpu:.0f}%" + ("!" if cpu >= cpu_max else ""),
                    "" if mem is None else f"{mem:.0f}%" + ("!" if mem >= mem_max else ""), r.get("Image", ""),
                    "; ".join(x for x in (detail, why) if x)])
    return out, alerts, down


SCHEMES = {7687: "bolt", 5432: "postgresql", 6379: "redis", 3306: "mysql", 27017: "mongodb", 6333: "http",
           19530: "grpc"}
PATHS = {"api": "/docs"}


ALL_INTERFACES = ("", "0.0.0.0", "::")


def published(model: Mapping[str, Any], service: str) -> list[tuple[str, int, int]]:
    """(bind address as published, "" for all interfaces; published port; container port) of each
    port ``service`` publishes on the engine's host."""
    return [(str(p.get("host_ip") or ""), int(p["published"]), int(p["target"]))
            for p in (model["services"][service].get("ports") or []) if p.get("published")]


def url(service: str, container_port: int, address: str, port: int) -> str:
    scheme = SCHEMES.get(container_port, "http")
    return f"{scheme}://{address}:{port}{PATHS.get(service, '') if scheme == 'http' else ''}"


def urls(t: Target, services: Iterable[str] | None = None, public: str = "127.0.0.1") -> list[list[str]]:
    """Where to reach each published port from the engine's host (of ``services`` only, when
    given); ports published on every interface are shown at ``public`` (this host's loopback
    locally; a remote host's address)."""
    from .proxy import proxy_service, routes

    model = t.compose.model(t.c)
    only = None if services is None else set(services)
    edge = proxy_service(model)
    out = []
    for name, svc in model.get("services", {}).items():
        if only is not None and name not in only:
            continue
        labels = svc.get("labels") or {}
        for bind, port, container_port in published(model, name):
            address = public if bind in ALL_INTERFACES else bind
            path_of = name
            if name == edge:  # the edge proxy's port: the path of the service it routes / there to
                path_of = next((r.service for r in routes(model) if r.listen == container_port and r.path == "/"), name)
            out.append([name, labels.get("memstack-ops.url") or url(path_of, container_port, address, port)])
    return out


def write_local_config(root: Path, overlays: list[str]) -> Path:
    """Record machine-local overlays (e.g. the local images) in the git-ignored local config."""
    from .config import LOCAL_CONFIG_FILE

    path = root / LOCAL_CONFIG_FILE
    lines = [ln for ln in (path.read_text().splitlines() if path.exists() else []) if not ln.startswith("overlays")]
    # top-level keys must come before the first [table] header
    lines.insert(0, "overlays = [" + ", ".join(f'"{o}"' for o in overlays) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


def ensure_no_conflict(t: Target) -> None:
    if t.stack.stage == "prod" and "local" in t.settings["overlays"]:
        raise ComposeError("Stage prod with the local stand-in images overlay is refused: stand-ins are "
                           "not the real software. Drop the `local` overlay for prod.")

"""Start-first rollouts: a new container beside the old one, health-gated, then the switch.

For a stateless service (label ``memstack-ops.rollout: start-first``, the default of a service
routed by the edge proxy, memstack_ops/proxy.py) whose definition or image changed, ``up`` (and
so ``deploy``) does not let compose recreate the container. Instead ``roll``:

1. starts one new container beside the running one (``compose up --no-deps --no-recreate
   --scale svc=N+1``: same networks and aliases, new definition, no published port);
2. passes the tool's own health gate on that container (its compose healthcheck run directly,
   the kind's query, and the route's health path fetched from inside the proxy container);
3. routed service: points the proxy's upstream at the new container (config regenerated, checked,
   graceful ``nginx -s reload``), then drains the old one: waits until the nginx workers of the old
   config have finished their requests and exited, and the old container holds no open connection on
   its port, bounded by ``drain_timeout`` (default 30 s, label ``memstack-ops.drain-timeout``);
4. stops the old container with its ``stop_grace_period`` (its stop signal first, SIGTERM unless
   set: a worker finishes the job in flight) and removes it, so compose sees one container again.

If the new container never gets healthy it is removed and nothing else changed: the old one
served all along and the proxy config was not touched; the error names the service, the check's
last output and the new container's last log lines. Databases and other stateful kinds are never
started twice on the same volume: they keep compose's recreate.

Plain functions taking a Target, so ``-H`` runs them unchanged over SSH.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .compose import first_line, run
from .errors import ConfigError, HealthError, MemstackError, Refused
from .health import _seconds, poll
from .output import say, warn
from .proxy import PORT_LABEL, Proxy, Route, labels, proxy_service

if TYPE_CHECKING:
    from .target import Target

ROLLOUT_LABEL = "memstack-ops.rollout"
DRAIN_LABEL = "memstack-ops.drain-timeout"
STRATEGIES = ("start-first", "recreate")


class RolloutError(MemstackError):
    """A start-first rollout failed; what served before still serves."""


def strategy(model: Mapping[str, Any], name: str) -> str:
    """``start-first`` or ``recreate`` (compose's own stop-then-start) for one service."""
    svc = model["services"][name]
    lab = labels(svc)
    value = lab.get(ROLLOUT_LABEL)
    if value is None:
        return "start-first" if PORT_LABEL in lab and name != proxy_service(model) else "recreate"
    if value not in STRATEGIES:
        raise ConfigError(f"Service {name}: label {ROLLOUT_LABEL}={value!r}: use one of {', '.join(STRATEGIES)}.")
    return value


def stateful(svc: Mapping[str, Any]) -> str:
    """The kind of a service that must never run twice on its data ("" for a stateless one)."""
    from .kinds import READY_KINDS, kind_of

    kind = kind_of(svc)
    return kind if kind in READY_KINDS else ""


def check_rollable(model: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The start-first services among ``names``. Refuses (before anything changes), naming the
    fix, a start-first service that cannot run twice: a fixed ``container_name``, its own
    published ports, a stateful kind, or the edge proxy itself."""
    out, problems = [], []
    px = proxy_service(model)
    for name in names:
        if strategy(model, name) != "start-first":
            continue
        svc = model["services"][name]
        kind = stateful(svc)
        if kind:
            problems.append(f"{name} is a {kind} service: stateful kinds are never started twice on the same volume; "
                            f"remove its label {ROLLOUT_LABEL}: start-first")
            continue
        if name == px:
            problems.append(f"{name} is the edge proxy, which owns the published ports: remove its label "
                            f"{ROLLOUT_LABEL}: start-first")
            continue
        if svc.get("container_name"):
            problems.append(f"{name} has container_name: {svc['container_name']} (two containers cannot share a name); "
                            f"remove container_name and reach it by its service name or a network alias")
        published = list(svc.get("ports") or [])  # a random host port too: the proxy owns the published ports
        if published:
            ports = ", ".join(f"{p.get('published') or 'random'}->{p.get('target')}" for p in published)
            problems.append(f"{name} publishes host port(s) {ports} (two containers cannot bind one port); remove its "
                            f"ports: and let the edge proxy publish them (label the proxy service "
                            f"`memstack-ops.proxy: nginx`, this one `{PORT_LABEL}: <container port>`)")
        out.append(name)
    if problems:
        raise Refused("Cannot roll out start-first (nothing was changed): " + "; ".join(problems) + ".")
    return out


def survey(t: Target, model: Mapping[str, Any], names: Iterable[str],
           rows: list[dict[str, Any]] | None = None) -> tuple[list[str], list[str]]:
    """(changed, current) among ``names``: changed ones run and their container is not what ``up``
    would make (definition, i.e. compose's config hash, or image ID differ); current ones have
    exactly one container, running, made from the current definition and image (and no replica
    count), so a `compose up` of them would change nothing.

    What runs is read with one docker listing (``rows``: ``Compose.containers``, given or read
    here); the wanted config hashes and the image IDs are asked at the same time."""
    from concurrent.futures import ThreadPoolExecutor

    from .lifecycle import CONFIG_HASH

    names = list(names)
    if not names:
        return [], []
    every = [r for r in (rows if rows is not None else t.compose.containers(t.c, names)) if r.get("Service") in names]
    running = [r for r in every if r.get("State") == "running"]
    if not running:
        return [], []
    services = sorted({str(r.get("Service")) for r in running})
    images = sorted({str(model["services"][s].get("image") or "") for s in services} - {""})
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="survey") as pool:
        fi = pool.submit(run, t.c, ["docker", "image", "inspect", "--format", "{{.Id}}", *images],
                         timeout=60) if images else None
        want = t.compose.hashes(t.c, services)
        ri = fi.result() if fi is not None else None
    have: dict[str, str] = {}
    if ri is not None:
        ids = ri.stdout.split()
        have = dict(zip(images, ids, strict=True)) if ri.ok and len(ids) == len(images) else {}
    changed, fine = set(), set()
    for row in running:
        s = str(row.get("Service"))
        m = CONFIG_HASH.search(str(row.get("Labels") or ""))
        image = str(model["services"][s].get("image") or "")
        runs = row.get("ImageID")
        if (not m or want.get(s) != m.group(1)) or (image in have and runs not in (None, have[image])):
            changed.add(s)
        elif image in have and runs == have[image]:
            fine.add(s)
    count: dict[str, int] = {}
    for row in every:
        count[str(row.get("Service"))] = count.get(str(row.get("Service")), 0) + 1
    svcs = model["services"]
    current = [n for n in names if n in fine and n not in changed and count.get(n) == 1
               and not (svcs[n].get("deploy") or {}).get("replicas") and not svcs[n].get("scale")]
    return [n for n in names if n in changed], current


@dataclass
class Rolled:
    service: str
    old: list[str]
    new: str
    took: float
    drained: float  # seconds waited for the old container's requests
    drain_complete: bool
    detail: str = ""  # what the health gate found


def _state(t: Target, container: str) -> tuple[str, str, str, str]:
    """(status, health, exit code, restart count) of a container."""
    r = run(t.c, ["docker", "inspect", "--format",
                  "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.ExitCode}}|"
                  "{{.RestartCount}}", container], timeout=30)
    parts = (r.stdout.strip().split("|") + ["", "", "", ""])[:4] if r.ok else ["gone", "", "", ""]
    return parts[0], parts[1], parts[2], parts[3]


HTTP_CHECK = ('if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null --max-time 3 "$1"; '
              'else wget -q -O /dev/null -T 3 "$1"; fi')


def gate(t: Target, model: Mapping[str, Any], name: str, container: str, timeout: float, interval: float,
         proxy: Proxy | None = None, route: Route | None = None, since: int | None = None) -> str:
    """Wait until ``container`` (of service ``name``) passes the tool's health gate: the check ``up``
    uses, and the route's health path fetched from inside the proxy container (so the proxy can
    reach it). Returns the detail; raises HealthError with the last check output when it fails
    (exits, crash-loops, is marked unhealthy, or is not ready within ``timeout``). With ``since``
    (interrupt.generation()), raises KeyboardInterrupt at the next round after a Ctrl-C."""
    from .health import Watch
    from .interrupt import check

    watch = Watch(t.c, t.compose, model, probes={})
    last = {"out": "", "detail": "not checked yet"}
    proxy_container = proxy.container() if proxy is not None and route is not None and route.health else None

    has_test = bool(watch._test(name))

    def state() -> bool:
        status, health, code, restarts = _state(t, container)
        if status in ("exited", "dead", "gone"):
            raise HealthError(f"the new container {status}" + (f" with code {code}" if status != "gone" else ""))
        if status == "restarting" or (restarts not in ("", "0")):
            raise HealthError("the new container is restarting (crash loop)")
        if health == "unhealthy":
            raise HealthError("the engine marked the new container unhealthy")
        return status == "running"

    def from_proxy() -> Any:
        assert proxy_container and route is not None
        url = f"http://{container}:{route.port}{route.health}"
        return run(t.c, ["docker", "exec", proxy_container, "sh", "-c", HTTP_CHECK, "sh", url], timeout=10)

    def ready() -> bool:
        # with a healthcheck, the check runs first and the container's state is read only when it
        # does not pass (a passing check ran in the running container): one docker call a round;
        # the health path is fetched from the proxy at the same time (both must pass)
        if since is not None:
            check(since)
        if not has_test and not state():
            return False
        via = watch.pool.submit(from_proxy) if proxy_container and route is not None else None
        ok, out, detail = watch.check_container(name, container, "")
        last.update(out=out, detail=detail)
        if not ok:
            if via is not None:
                via.result()
            state()
            return False
        if via is not None and route is not None:
            r = via.result()
            if r.failed:
                last.update(out=(r.stderr or r.stdout).strip(), detail=f"{route.health} not answering from the proxy")
                return False
            detail += f", {route.health} answers from the proxy"
            last.update(detail=detail)
        return True

    try:
        if poll(ready, timeout, interval):
            return last["detail"]
    except HealthError as e:
        raise HealthError(f"{e}; last check: {last['detail']}\n--- last health-check output ---\n"
                          f"{t.compose.scrub(last['out']) or '(no output)'}") from None
    finally:
        watch.pool.shutdown(wait=False, cancel_futures=True)
    raise HealthError(f"not ready after {timeout:.0f} s ({last['detail']})\n--- last health-check output ---\n"
                      f"{t.compose.scrub(last['out']) or '(no output)'}")


def connections(t: Target, container: str, port: int) -> int | None:
    """Established TCP connections on ``port`` of ``container`` (its /proc/net/tcp{,6}); None
    when they cannot be read (no sh or cat in the image)."""
    r = run(t.c, ["docker", "exec", container, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"],
            timeout=15)
    if r.failed or not r.stdout.strip():
        return None
    want = f"{port:04X}"
    n = 0
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and ":" in f[1] and f[1].rsplit(":", 1)[1] == want and f[3] == "01":
            n += 1
    return n


def _idle(t: Target, container: str, port: int, since: int | None = None) -> Callable[[], bool]:
    """A readiness test: ``container`` holds no open connection on ``port`` (or cannot tell). With
    ``since`` (interrupt.generation()), it raises KeyboardInterrupt after a Ctrl-C instead."""
    from .interrupt import check

    def idle() -> bool:
        if since is not None:
            check(since)
        return connections(t, container, port) in (0, None)

    return idle


def grace(svc: Mapping[str, Any]) -> float:
    """The service's stop_grace_period in seconds (compose's default 10 s)."""
    return _seconds(svc.get("stop_grace_period"), 10.0)


def drain_timeout(t: Target, svc: Mapping[str, Any]) -> float:
    value = labels(svc).get(DRAIN_LABEL)
    try:
        return float(value) if value is not None else float(t.settings["drain_timeout"])
    except ValueError:
        raise ConfigError(f"Label {DRAIN_LABEL}={value!r} must be a number of seconds.") from None


def logs(t: Target, container: str, tail: int = 50) -> str:
    r = run(t.c, ["docker", "logs", "--tail", str(tail), container], timeout=30)
    return t.compose.scrub((r.stdout + r.stderr).rstrip()) or "(no log lines)"


def remove(t: Target, containers: Iterable[str], stop_time: float | None = None, scratch: bool = False,
           model: Mapping[str, Any] | None = None, by: str = "") -> None:
    """Stop (with ``stop_time`` seconds for the stop signal to work, then SIGKILL) and remove.
    ``scratch``: containers that never served (a new one removed before the switch): their anonymous
    volumes go with them. Else those volumes may hold what the service wrote: they are kept, and
    named in a warning (``by`` says who left them)."""
    from .lifecycle import anonymous_note, anonymous_volumes

    containers = list(containers)
    if not containers:
        return
    left = [] if scratch else anonymous_volumes(t, containers, model)  # before: after, nothing points at them
    if stop_time is not None:
        secs = max(0, int(round(stop_time)))
        r = run(t.c, ["docker", "stop", "--time", str(secs), *containers], timeout=secs + 60)
        if r.failed and "No such container" not in r.stderr:
            raise RolloutError(f"Stopping {', '.join(containers)} failed: {first_line(r.stderr)}")
    r = run(t.c, ["docker", "rm", "--force", *(["-v"] if scratch else []), *containers], timeout=60)
    if r.failed and "No such container" not in r.stderr:
        raise RolloutError(f"Removing {', '.join(containers)} failed: {first_line(r.stderr)}")
    if left:
        warn(anonymous_note(t, left, by=by or f"removing {', '.join(containers)}"))


def roll(t: Target, model: Mapping[str, Any], name: str, timeout: float | None = None,
         proxy: Proxy | None = None, sleep: Callable[[float], None] = time.sleep,
         notes: list[str] | None = None) -> Rolled:
    """Roll service ``name`` start-first (module docstring). Raises RolloutError, after removing
    the new container, when it does not pass the health gate; the old one never stopped serving.

    Ctrl-C (KeyboardInterrupt, re-raised after the undo; what was done is appended to ``notes``):
    before the switch, the new container is removed (the old one served all along); from the
    switch on, the proxy stays on the new container (healthy, serving) and the old one is stopped
    with its stop signal (it finishes the requests it holds, bounded by its stop_grace_period)
    and removed, so one container serves, as after a complete rollout."""
    from .interrupt import check, generation, undoing

    # this runs in a worker thread: a Ctrl-C reaches it through a run in flight, or through
    # check(since) between runs (else a rollout between two polls would go on to its end)
    since = generation()
    t0 = time.monotonic()
    svc = model["services"][name]
    timeout = float(timeout if timeout is not None else t.settings["timeout"])
    interval = float(t.settings["interval"])
    rows = t.compose.containers(t.c, [name])
    old = sorted(str(r.get("Name")) for r in rows if r.get("State") == "running")
    stale = [str(r.get("Name")) for r in rows if r.get("State") != "running"]
    # stopped leftovers would be started again by --scale instead of a new container
    remove(t, stale, model=model, by=f"the rollout of {name}")
    t.compose.check(t.c, "up", "--detach", "--no-deps", "--no-recreate", "--scale", f"{name}={len(old) + 1}", name,
                    what=f"Starting a new {name} container beside {', '.join(old) or 'none'}")
    now = [str(r.get("Name")) for r in t.compose.containers(t.c, [name])]
    fresh = [c for c in now if c not in old and c not in stale]
    if len(fresh) != 1:
        raise RolloutError(f"Starting a new {name} container beside {', '.join(old)} gave {len(fresh)} new "
                           f"containers ({', '.join(fresh) or 'none'}); see `memstack-ops status`.")
    new = fresh[0]
    route = next((r for r in (proxy.routes if proxy else []) if r.service == name), None)
    say(f"  {name}: new container {new} started beside {', '.join(old) or 'none'}; health gate ...")
    try:
        detail = gate(t, model, name, new, timeout, interval, proxy, route, since)
    except (HealthError, KeyboardInterrupt) as e:
        verdict = time.monotonic()
        interrupted = isinstance(e, KeyboardInterrupt)
        with undoing(interrupted):
            last = logs(t, new) if not interrupted else ""
            remove(t, [new], scratch=True)
        if interrupted:
            if notes is not None:
                notes.append(f"{name}: the new container {new} removed before the switch; "
                             f"{', '.join(old) or 'the old container'} kept serving")
            raise
        say(f"  {name}: rolled back in {time.monotonic() - verdict:.1f} s: {new} removed, {', '.join(old)} "
            f"kept serving, proxy unchanged")
        raise RolloutError(f"Service {name!r}: the new container {new} did not pass the health gate: {e}\n"
                           f"--- last 50 log lines of {new} ---\n{last}\n\n"
                           f"Rolled back: {new} was removed; {', '.join(old) or 'the old container'} kept serving "
                           f"the whole time and the proxy config was not changed. Fix the image or its "
                           f"healthcheck, then deploy again.") from None
    say(f"  {name}: {new} is healthy ({detail})")
    waited, complete = 0.0, True
    switching = False
    try:
        check(since)  # not switched yet: the handler below removes the new container
        if proxy is not None and route is not None:
            with proxy.lock:
                switching = True  # from here on the proxy may send to the new container: it stays there
                ups = proxy.current_upstreams()
                ups[name] = [f"{new}:{route.port}"]
                proxy.apply(ups)
                old_workers = set(proxy.old_workers)
            say(f"  {name}: proxy switched to {new}; draining {', '.join(old)} ...")
            limit = drain_timeout(t, svc)
            d0 = time.monotonic()
            complete = proxy.drained(old_workers, limit)
            for c in old:
                left = max(0.0, limit - (time.monotonic() - d0))
                complete = poll(_idle(t, c, route.port, since), left, 0.2) and complete
            waited = time.monotonic() - d0
            say(f"  {name}: drained in {waited:.1f} s" if complete else
                f"  {name}: drain timeout ({limit:.0f} s) reached: requests still open on {', '.join(old)} are cut")
        check(since)
        remove(t, old, stop_time=grace(svc), model=model, by=f"the rollout of {name}")
    except KeyboardInterrupt:
        with undoing(True):
            if route is not None and not switching:  # the proxy was not touched: back to the old one
                remove(t, [new], scratch=True)
                note = f"the new container {new} removed before the switch; {', '.join(old)} kept serving"
            else:
                if proxy is not None and route is not None:
                    container = proxy.container()
                    if container:  # the config may be written but not loaded yet: load it (idempotent)
                        proxy.reload(container)
                remove(t, old, stop_time=grace(svc), model=model, by=f"the rollout of {name}")
                note = (f"the proxy stays on {new} (healthy, serving); " if route is not None else
                        f"{new} (healthy) runs; ") + (f"{', '.join(old)} stopped (its requests in flight finished "
                                                      f"first) and removed" if old else "")
        if notes is not None:
            notes.append(f"{name}: {note}")
        raise
    took = time.monotonic() - t0
    say(f"  {name}: rolled out start-first in {took:.1f} s ({', '.join(old)} -> {new})")
    return Rolled(name, old, new, took, waited, complete, detail)

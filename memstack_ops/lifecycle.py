"""Compose lifecycle: up (health-gated, dependency layered), down, restart, status, urls.

Plain functions taking an invoke Context first; tasks only resolve settings and print.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .compose import Compose, dependencies, topo_layers, validate_services
from .config import Settings, Stack
from .errors import ComposeError
from .health import Status, Watch
from .output import confirm, interactive, say


@dataclass
class Target:
    """Everything a core function needs about the stack it works on."""

    c: Any
    settings: Settings
    stack: Stack
    compose: Compose
    env: dict[str, str] = field(default_factory=dict)

    @property
    def probes(self) -> Mapping[str, str]:
        return dict(self.stack.options.get("probes", {}))


def target(c: Any, settings: Settings, require_env: bool = True) -> Target:
    """Build the Target for the settings' stack; reads (and validates the syntax of) its env
    files so their secret values can be masked in anything we print."""
    from .envfiles import read_env

    stack = settings.stack()
    env: dict[str, str] = {}
    for f in stack.env_files:
        p = stack.root / f
        if p.is_file():
            env.update(read_env(p))
        elif require_env and f == stack.env_file:
            from .errors import EnvFileError

            raise EnvFileError(f"The env file {f} is missing: run `inv env.init --stack {stack.name}` "
                               f"(it writes one from {stack.env_template} with strong generated secrets).")
    return Target(c, settings, stack, Compose(stack, secrets=env), env)


class Display:
    """Live per-service status: a rich table on a terminal, one plain line per change otherwise."""

    def __init__(self, services: Iterable[str]):
        self.services = list(services)
        self.statuses: dict[str, Status] = {}
        self.live: Any = None
        self.t0 = time.monotonic()

    def __enter__(self) -> "Display":
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
            detail = f"{st.detail} after {st.ready_after:.1f} s" if st.ready and st.ready_after is not None else st.detail
            t.add_row(s, st.state, mark, detail)
        return t

    def add(self, services: Iterable[str]) -> None:
        self.services += [s for s in services if s not in self.services]

    def __call__(self, st: Status) -> None:
        self.statuses[st.service] = st
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
       wait: bool = True, build: bool = False, sleep: Callable[[float], None] = time.sleep) -> dict[str, Status]:
    """Start services (and what they depend on); each service starts as soon as all its own
    dependencies pass their healthchecks; wait until all are ready, or fail fast."""
    timeout = float(timeout if timeout is not None else t.settings["timeout"])
    model = t.compose.model(t.c)
    names = validate_services(model, services, t.stack.name)
    deps = dependencies(model, names)
    order = [s for layer in topo_layers(deps) for s in layer]  # also rejects cycles
    extra = ["--build"] if build else []
    if not wait:
        t.compose.check(t.c, "up", "--detach", *extra, *order, what="Starting the stack")
        return {}
    watch = Watch(t.c, t.compose, model, probes=t.probes, one_shot=one_shot_services(model))
    started: set[str] = set()  # compose up submitted
    active: set[str] = set()  # compose up completed: only these are judged by the watch
    inflight: dict[Future[Any], list[str]] = {}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose-up")

    def start_unblocked() -> None:
        for f in [f for f in inflight if f.done()]:
            batch = inflight.pop(f)
            f.result()  # a failed `compose up` surfaces here, with compose's own message
            active.update(batch)
        ready = {s for s, st in watch.statuses.items() if st.ready}
        batch = [s for s in order if s not in started and deps[s] <= ready]
        if batch:
            started.update(batch)
            # --no-deps: we order and gate the start ourselves; compose would otherwise wait for
            # the engine's next healthcheck tick (10 s in the seeds) before starting dependants.
            # In the background, so polling the services already started goes on meanwhile.
            inflight[pool.submit(t.compose.check, t.c, "up", "--detach", "--no-deps", *extra, *batch,
                                 what=f"Starting {', '.join(batch)}")] = batch

    try:
        with Display(order) as display:
            watch.on_change = display
            watch.wait(order, time.monotonic() + timeout, float(t.settings["interval"]), sleep=sleep,
                       before_poll=start_unblocked, active=active)
    finally:
        pool.shutdown(wait=True)
    for f in inflight:
        f.result()
    return watch.statuses


def down(t: Target, volumes: bool = False, yes: bool = False) -> None:
    if volumes:
        vols = sorted(t.compose.model(t.c).get("volumes", {}) or {})
        confirm(f"This deletes ALL data of stack {t.stack.name!r} (project {t.stack.project}): "
                f"volumes {', '.join(vols) or '(none)'}.", t.stack.name, yes=yes)
        t.compose.check(t.c, "down", "--volumes", "--remove-orphans", what="Stopping and removing data")
    else:
        t.compose.check(t.c, "down", "--remove-orphans", what="Stopping the stack")


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


def status(t: Target) -> list[list[str]]:
    """Rows: service, state, health, ports, uptime, image (defined-but-absent services too)."""
    model = t.compose.model(t.c)
    rows = {r.get("Service"): r for r in t.compose.ps(t.c)}
    out = []
    for name, svc in model.get("services", {}).items():
        r = rows.get(name)
        if r is None:
            out.append([name, "not created", "", "", "", svc.get("image", "")])
            continue
        up_for = r.get("RunningFor", "") if r.get("State") == "running" else ""
        out.append([name, r.get("State", ""), r.get("Health", "") or "-", _ports(r), up_for, r.get("Image", "")])
    return out


SCHEMES = {7687: "bolt", 5432: "postgresql", 6379: "redis", 3306: "mysql", 27017: "mongodb", 6333: "http", 19530: "grpc"}
PATHS = {"api": "/docs"}


def urls(t: Target) -> list[list[str]]:
    """Where to reach each published port from this host."""
    model = t.compose.model(t.c)
    out = []
    for name, svc in model.get("services", {}).items():
        labels = svc.get("labels") or {}
        for p in svc.get("ports") or []:
            if not p.get("published"):
                continue
            host = p.get("host_ip") or "127.0.0.1"
            host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            target = int(p["target"])
            scheme = SCHEMES.get(target, "http")
            url = labels.get("memstack-ops.url") or f"{scheme}://{host}:{p['published']}{PATHS.get(name, '') if scheme == 'http' else ''}"
            out.append([name, url])
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

"""The rest of the tool on a swarm stack (issue 15): ``status``, ``logs``, ``scale``, ``rollback``,
and ``db.*``/``backup.*``/``restore.*`` on the node that runs a database's task.

A stack is a swarm stack when its engine is ``swarm`` (``engine = "swarm"`` in its
``[stacks.NAME]`` table: ``is_swarm``), or, for ``status``, when compose finds none of its
containers here and this machine's engine manages a swarm stack of its project name
(``deployed_on_swarm``). Everything about the services is asked of a manager
(``swarm.manager``: the -H host when its engine is one, else the inventory's manager):

- ``status``: per service, its tasks running/desired, the node of each running task, health (a task
  with a healthcheck is ``running`` only once healthy: until then its state is ``starting``, and the
  engine fails it when it turns unhealthy), image, and what is wrong (the newest failed task's error,
  an update that did not complete). Exits non-zero when a service is short of tasks or a one-shot
  job failed, as the compose status does for a stopped service;
- ``logs``: ``docker service logs`` of each of the stack's services (every task, every node),
  merged in time order (bounded: ``--tail`` per service, and a timeout, since a node that is down
  makes it wait);
- ``scale svc=N``: stateless services only (a stateful one is pinned to the node that holds its
  data: one task is its rule), then swarm_deploy's convergence wait;
- ``rollback [--service S]``: ``docker service rollback`` of the services that have a previous
  definition, then the same wait.

Databases: the compose model is rendered here (as ``deploy --engine swarm`` does), the manager
says which node runs each database's task (``docker inspect`` of the running tasks: node and
container ID), and the tool connects to that node over SSH (``node_targets``). There the same code
runs as on a ``-H`` host, with a Target whose compose (``SwarmCompose``) addresses the task's
container (labels ``com.docker.swarm.service.name=<stack>_<svc>``,
``com.docker.stack.namespace=<stack>``) instead of compose's project labels: ``exec`` becomes
``docker exec`` of that container, ``ps`` lists the stack's containers on that node. The model there
has no ``depends_on`` (the swarm runs none: services start in no order), so a restore stops no
other service; a restore that must stop the database itself (redis, neo4j) is refused for now.
Backups are kept on the node, in ``<root>/backups/<stack>`` (``root`` of its inventory host).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .compose import Compose
from .compose import run as run_argv
from .errors import ConfigError, HealthError, MemstackError, Refused
from .output import say, table
from .swarm import SwarmError, _run, _said
from .target import Target, where

if TYPE_CHECKING:
    from .config import Settings, Stack
    from .proxy import Maintenance
    from .swarm_deploy import Look, Service

SERVICE_LABEL = "com.docker.swarm.service.name"
NAMESPACE = "com.docker.stack.namespace"
LOG_TIMEOUT = 60  # seconds for one `docker service logs` (a node that is down makes it wait)
STAMP = re.compile(r"\b(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\b")


def is_swarm(settings: Settings) -> bool:
    """The stack's engine setting says swarm."""
    from .swarm_deploy import engine

    return engine(settings) == "swarm"


def deployed_on_swarm(c: Any, project: str) -> bool:
    """``c``'s own engine is a swarm manager with services of stack ``project`` (no SSH)."""
    from .swarm import info

    try:
        mine = info(c)
    except MemstackError:
        return False
    if mine.state != "active" or not mine.manager:
        return False
    r = _run(c, f"docker service ls -q --filter {shlex.quote(f'label={NAMESPACE}={project}')}")
    return bool(r.ok and r.stdout.strip())


def swarm_settings(c: Any, settings: Settings) -> Settings:
    """The settings as seen for the -H host (its inventory's overrides), like deploy's."""
    from .remote.inventory import host_settings

    host = getattr(c, "inventory", None)
    return host_settings(settings, host) if host is not None else settings


# ---------------------------------------------------------------- status

@dataclass
class Row:
    service: str
    running: int
    desired: int | None  # None: a one-shot job
    nodes: str
    health: str
    image: str
    detail: str = ""
    short: bool = False  # fewer tasks running than desired, or a failed job

    @property
    def replicas(self) -> str:
        return "job" if self.desired is None else f"{self.running}/{self.desired}"


def spec_of(svc: Service) -> dict[str, Any]:
    """The service's task template (ContainerSpec, RestartPolicy, ...)."""
    return dict(json.loads(svc.template or "{}"))


def is_job(svc: Service) -> bool:
    """A one-shot job: its tasks are never restarted (the renderer's restart_policy none)."""
    return str((spec_of(svc).get("RestartPolicy") or {}).get("Condition") or "") == "none"


def image_of(svc: Service) -> str:
    return str((spec_of(svc).get("ContainerSpec") or {}).get("Image") or "").split("@sha256:", 1)[0]


def has_check(svc: Service) -> bool:
    test = ((spec_of(svc).get("ContainerSpec") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def spread(names: Iterable[str]) -> str:
    """``h1, h2 x2``: the nodes of some tasks, each with its count."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(f"{n} x{k}" if k > 1 else n for n, k in sorted(counts.items()))


def rows(last: Look, nodes: Mapping[str, str]) -> list[Row]:
    """One row per service of the stack (see the module docstring)."""
    out = []
    for name in sorted(last.services):
        svc = last.services[name]
        tasks = last.of(name)
        failed = [t for t in tasks if t.state in ("failed", "rejected", "orphaned")
                  or t.state == "complete" and t.exit_code not in (0, None)]
        why = ""
        if failed:
            f = failed[-1]
            why = (f"last failed task on {nodes.get(f.node_id, f.node_id[:12] or '(no node)')}: {f.state}"
                   + (f", exit {f.exit_code}" if f.exit_code is not None else "") + (f", {f.err}" if f.err else ""))
        update = f"update {svc.update_state}: {svc.update_message}" if svc.update_state not in ("", "completed") \
            else ""
        if is_job(svc):
            newest = tasks[-1] if tasks else None
            state = newest.state if newest else "no task"
            bad = state in ("failed", "rejected", "orphaned") or (state == "complete" and newest is not None
                                                                   and newest.exit_code not in (0, None))
            health = "completed (exit 0)" if state == "complete" and not bad else state
            where_ = nodes.get(newest.node_id, "") if newest else ""
            out.append(Row(name, int(state == "running"), None, where_, health, image_of(svc),
                           "; ".join(x for x in (why if bad else "", update) if x), short=bad))
            continue
        live = [t for t in tasks if t.desired == "running"]
        running = [t for t in live if t.state == "running"]
        starting = [t for t in live if t.state != "running"]
        desired = svc.replicas if svc.replicas is not None else len(live)
        if desired == 0:
            health = "scaled to 0"
        elif len(running) == desired and not starting:
            health = "healthy" if has_check(svc) else "running (no healthcheck)"
        else:  # the tasks not running yet by state (starting: its healthcheck has not passed yet),
            # then the replicas that have no task at all: each replica counted once (a pending task
            # is the missing replica, not one more)
            states: dict[str, int] = {}
            for t in starting:
                states[t.state] = states.get(t.state, 0) + 1
            none = desired - len(running) - len(starting)
            health = ", ".join([*(f"{k} {st}" for st, k in sorted(states.items())),
                                *([f"{none} missing"] if none > 0 else [])]) or "converging"
        short = len(running) < desired
        out.append(Row(name, len(running), desired, spread(nodes.get(t.node_id, t.node_id[:12]) for t in running),
                       health, image_of(svc), "; ".join(x for x in (why if short or starting else "", update) if x),
                       short=short))
    return out


def status(c: Any, settings: Settings) -> list[Row]:
    """The swarm stack's table (from a manager); HealthError when a service is short of tasks."""
    from .swarm import list_nodes, manager
    from .swarm_deploy import look

    stack = settings.stack()
    proxy = _proxy_of(settings)
    with manager(c, settings) as (mc, _):
        last = look(mc, stack.project)
        nodes = {n.id: n.hostname for n in list_nodes(mc)}
        src = where(mc)
        m = current_maintenance(mc, stack.project, proxy) if proxy and proxy in last.services else None
    if not last.services:
        raise HealthError(f"Swarm stack {stack.project} has no service on the swarm of {src}: deploy it with "
                          f"`memstack-ops deploy --engine swarm` (or engine = \"swarm\" in [stacks.{stack.name}]).")
    found = rows(last, nodes)
    table(f"swarm stack {stack.project} (stack {stack.name}, from {src})",
          ["service", "replicas", "nodes", "health", "image", "detail"],
          [[r.service, r.replicas, r.nodes, r.health, r.image, r.detail] for r in found])
    if m is not None:
        from .proxy import DEFAULT_MESSAGE

        say(f"maintenance: ON: proxy {proxy} answers 503 with the page ({m.message or DEFAULT_MESSAGE})" if m.on else
            f"maintenance: off; proxy {proxy} routes to the tasks of its services (tasks.<service>)")
    short = [r for r in found if r.short]
    if short:
        what = "; ".join(f"{r.service}: {r.replicas} running" if r.desired is not None else f"{r.service}: job failed"
                         for r in short)
        raise HealthError(f"Not running as it should on the swarm: {what}. `memstack-ops logs --service "
                          f"{short[0].service}` shows why; `memstack-ops swarm.nodes` whether a node is down or "
                          f"drained.")
    return found


def _proxy_of(settings: Settings) -> str | None:
    """The stack's edge proxy service, from this machine's compose model (None without one)."""
    from invoke import Context

    from .proxy import proxy_service
    from .target import target

    try:
        t = target(Context(), settings, require_env=False)
        return proxy_service(t.compose.model(t.c))
    except MemstackError:  # status shows the services whatever this machine's compose files say
        return None


# ---------------------------------------------------------------- logs

# Each service's logs (bounded in lines and time), one block per service after a marker line.
LOGS = ('n=$1; t=$2; shift 2; for s in "$@"; do echo "@@@ $s"; '
        'timeout "$t" docker service logs --no-trunc --timestamps --tail "$n" "$s" 2>&1; done; true')
FOLLOW = ('n=$1; shift; for s in "$@"; do docker service logs --no-trunc --timestamps --follow --tail "$n" "$s" & '
          'done; wait')


def merge(text: str) -> list[str]:
    """The blocks of ``LOGS`` as one list of lines in time order (by each line's RFC 3339
    timestamp; a line without one stays after the line before it)."""
    keyed: list[tuple[str, int, str]] = []
    last = ""
    for i, ln in enumerate(text.splitlines()):
        if ln.startswith("@@@ ") or not ln.strip():
            continue
        m = STAMP.search(ln)
        if m:
            head, _, frac = m.group(1).rstrip("Z").partition(".")
            last = f"{head}.{frac.ljust(9, '0')}"
        keyed.append((last, i, ln))
    return [ln for _, _, ln in sorted(keyed)]


def logs(c: Any, settings: Settings, service: str | None = None, follow: bool = False, tail: int = 100) -> None:
    """The stack's services' logs (every task on every node), merged in time order; secrets masked."""
    from .swarm import manager
    from .swarm_deploy import look

    stack = settings.stack()
    scrub = _scrubber(settings)
    with manager(c, settings) as (mc, _):
        names = sorted(look(mc, stack.project).services)
        if service:
            if service not in names:
                raise ConfigError(f"Swarm stack {stack.project} has no service {service!r}; its services are: "
                                  f"{', '.join(names) or 'none'}.")
            names = [service]
        full = [f"{stack.project}_{n}" for n in names]
        if not full:
            raise SwarmError(f"Swarm stack {stack.project} has no service on {where(mc)}: deploy it first.")
        if follow:  # until Ctrl-C; each service's own stream, as the engine sends it
            mc.run(f"sh -c {shlex.quote(FOLLOW)} sh {int(tail)} {shlex.join(full)}", hide=False, warn=True,
                   in_stream=False)
            return
        r = _run(mc, f"sh -c {shlex.quote(LOGS)} sh {int(tail)} {LOG_TIMEOUT} {shlex.join(full)}",
                 timeout=LOG_TIMEOUT * len(full) + 30)
    for ln in merge(scrub(r.stdout or "")):
        print(ln)


def _scrubber(settings: Settings) -> Any:
    """Masks the stack's env secrets (this machine's env files) in what the engine says."""
    from .envfiles import scrub
    from .target import read_env_files

    try:
        env = read_env_files(settings.stack(), False, "")
    except MemstackError:
        env = {}
    return lambda text: scrub(text, env, set())


# ---------------------------------------------------------------- scale and rollback

def stateful(settings: Settings) -> dict[str, str]:
    """{service: its kind} of the stack's stateful services, from this machine's compose model."""
    from invoke import Context

    from .kinds import kind_of
    from .swarm_render import stateful_services
    from .target import target

    t = target(Context(), settings)
    model = t.compose.model(t.c)
    return {n: kind_of(model["services"][n]) for n in stateful_services(model)}


@contextmanager
def _locked(mc: Any, stack: Stack, what: str) -> Iterator[dict[str, str]]:
    """The deploy lock of the swarm stack on the manager (the one deploy takes) and one audit line;
    the caller puts its outcome in the yielded dict (result, detail)."""
    from .remote.lock import Lock
    from .remote.release import audit
    from .swarm import host_of

    host = host_of(mc)
    root = host.root_for(stack.name) if host is not None else f"/tmp/memstack-ops-{stack.project}"
    lock = Lock(mc, root, f"swarm {what} of {stack.project}")
    lock.acquire(0.0, sleep=time.sleep, say=say)
    outcome = {"result": "failed", "detail": ""}
    try:
        yield outcome
    except MemstackError as e:
        outcome["detail"] = outcome["detail"] or str(e).splitlines()[0]
        raise
    finally:
        try:
            audit(mc, root, f"swarm {what}", stack.project, outcome["result"], outcome["detail"])
        finally:
            lock.release()


def scale(c: Any, settings: Settings, specs: Iterable[str]) -> None:
    """``scale api=3[,worker=2]``: set the replicas of stateless services and wait until converged."""
    from .swarm import manager
    from .swarm_deploy import look, wait
    from .swarm_render import parse_replicas

    wanted = parse_replicas(specs)
    if not wanted:
        raise ConfigError("scale takes SERVICE=N (several: api=3,worker=2).")
    stack = settings.stack()
    pinned = {n: k for n, k in stateful(settings).items() if n in wanted}
    if pinned:
        raise Refused(f"Not scaled (nothing changed): {', '.join(f'{n} ({k})' for n, k in sorted(pinned.items()))} "
                      f"{'is' if len(pinned) == 1 else 'are'} stateful: exactly one task, pinned to the node labelled "
                      f"memstack-ops.<service>=true that holds its data; a second task would start a second "
                      f"database on another node's empty volume. Replicas 1 is their rule; scale the stateless "
                      f"services (api, workers) instead.")
    timeout = float(settings["timeout"])
    with manager(c, settings) as (mc, _):
        before = look(mc, stack.project)
        missing = sorted(set(wanted) - set(before.services))
        if missing:
            raise ConfigError(f"Swarm stack {stack.project} has no service {', '.join(missing)}; its services are: "
                              f"{', '.join(sorted(before.services)) or 'none (deploy it first)'}.")
        jobs = sorted(n for n in wanted if is_job(before.services[n]))
        if jobs:
            raise Refused(f"{', '.join(jobs)}: one-shot job(s), run once per deploy: there is nothing to scale.")
        with _locked(mc, stack, "scale") as outcome:
            args = " ".join(shlex.quote(f"{stack.project}_{n}={k}") for n, k in sorted(wanted.items()))
            r = _run(mc, f"docker service scale --detach {args}")
            if not r.ok:
                raise SwarmError(f"{where(mc)}: docker service scale failed: {_said(r)}.")
            say(f"Scaling {', '.join(f'{n} {before.services[n].replicas} -> {k}' for n, k in sorted(wanted.items()))}"
                f"; waiting up to {timeout:g} s for them to converge ...")
            result, last = wait(mc, stack.project, sorted(wanted), set(), set(), {t.id for t in before.tasks},
                                timeout)
            detail = "; ".join(f"{n}: {v.detail}" for n, v in sorted(result.verdicts.items()))
            if not result.ok:
                outcome["detail"] = f"not converged: {detail}"
                raise SwarmError(f"Scaling did not converge within {timeout:g} s: {detail}. `memstack-ops status` "
                                 f"shows where the tasks are; `memstack-ops logs --service SERVICE` why.")
            outcome.update(result="scaled", detail=detail)
    say(f"Scaled: {detail}.")


def rollback(c: Any, settings: Settings, services: Iterable[str] = ()) -> None:
    """``docker service rollback`` of the stack's services (or some) to their previous definition,
    then the convergence wait."""
    from .swarm import manager
    from .swarm_deploy import look, wait

    stack = settings.stack()
    timeout = float(settings["timeout"])
    with manager(c, settings) as (mc, _):
        before = look(mc, stack.project)
        names = list(services) or sorted(before.services)
        missing = sorted(set(names) - set(before.services))
        if missing or not names:
            raise ConfigError(f"Swarm stack {stack.project} has no service {', '.join(missing)}; its services are: "
                              f"{', '.join(sorted(before.services)) or 'none (deploy it first)'}.")
        able = [n for n in names if before.services[n].previous]
        none = [n for n in names if n not in able]
        if none:
            say(f"No previous definition to go back to (never updated): {', '.join(none)}.")
        if not able:
            if services:
                raise Refused(f"{', '.join(names)}: no previous definition on the swarm (never updated since it was "
                              f"created): nothing to roll back.")
            say("Nothing to roll back.")
            return
        with _locked(mc, stack, "rollback") as outcome:
            bad = []
            for n in able:
                r = _run(mc, f"docker service rollback --detach {shlex.quote(f'{stack.project}_{n}')}")
                if not r.ok:
                    bad.append(f"{n} ({_said(r)})")
            if bad:
                raise SwarmError(f"{where(mc)}: docker service rollback failed for {'; '.join(bad)}.")
            say(f"Rolling back {', '.join(able)} to their previous definition; waiting up to {timeout:g} s ...")
            jobs = {n for n in able if is_job(before.services[n])}
            result, _ = wait(mc, stack.project, able, jobs, set(), {t.id for t in before.tasks}, timeout,
                             rolling_back=True)
            detail = "; ".join(f"{n}: {v.detail}" for n, v in sorted(result.verdicts.items()))
            if not result.ok:
                outcome["detail"] = detail
                raise SwarmError(f"The rollback did not converge within {timeout:g} s: {detail}.")
            outcome.update(result="rolled back", detail=detail)
    say(f"Rolled back: {detail}.")


# ---------------------------------------------------------------- maintenance of the edge proxy

def proxy_config_of(mc: Any, project: str, proxy: str) -> tuple[str, str]:
    """(name, text) of the Swarm config the running proxy service mounts as its nginx config
    (("", "") when the service or its config is not there)."""
    import base64

    from .proxy import CONF_NAME, CONF_TARGET

    r = _run(mc, f"docker service inspect --format '{{{{json .Spec.TaskTemplate.ContainerSpec.Configs}}}}' "
                 f"{shlex.quote(f'{project}_{proxy}')}")
    try:
        mounted = json.loads(r.stdout or "null") if r.ok else None
    except ValueError:
        mounted = None
    name = next((str(x.get("ConfigName")) for x in mounted or []
                 if (x.get("File") or {}).get("Name") == f"{CONF_TARGET}/{CONF_NAME}"), "")
    if not name:
        return "", ""
    r = _run(mc, f"docker config inspect --format '{{{{json .Spec.Data}}}}' {shlex.quote(name)}")
    try:
        return name, base64.b64decode(json.loads(r.stdout)).decode() if r.ok else ""
    except (ValueError, TypeError):
        return name, ""


def maintenance(c: Any, settings: Settings, on: bool, message: str = "") -> str:
    """``maintenance on|off`` of a swarm stack's edge proxy: its config for that state (a new Swarm
    config: configs cannot change in place) swapped into the proxy service (``docker service
    update --config-rm/--config-add``, stop-first: the new task needs the host port), waited for,
    the old config removed. The state lives in the config (swarm_proxy.MARK), so a deploy keeps
    it. Returns what was done, for the task's line."""
    from .proxy import CONF_NAME, CONF_TARGET, Maintenance, proxy_service
    from .swarm import manager
    from .swarm_deploy import look, prune_proxy_configs, render_stack, wait
    from .swarm_proxy import maintenance_of, switched

    t, model, rendered = render_stack(settings, allow_env_secrets=True)
    proxy = proxy_service(model)
    if proxy is None or rendered.proxy is None:
        raise ConfigError(f"Stack {t.stack.name} has no edge proxy (a service labelled memstack-ops.proxy: nginx): "
                          f"there is nothing to put in maintenance.")
    stack = t.stack
    want = Maintenance(on, message if on else "")
    cfg = switched(rendered.stack, rendered.proxy, model, want)
    timeout = float(settings["timeout"])
    with manager(c, settings) as (mc, _):
        now_name, now_text = proxy_config_of(mc, stack.project, proxy)
        if not now_name:
            raise ConfigError(f"Swarm stack {stack.project} has no running proxy service {proxy} with its config: "
                              f"deploy it first (`memstack-ops deploy`).")
        if now_name == cfg.name or (maintenance_of(now_text) == want and not on):
            return f"already {'on' if on else 'off'}: nothing changed"
        with _locked(mc, stack, f"maintenance {'on' if on else 'off'}") as outcome:
            rendered.proxy = cfg
            from .swarm_deploy import create_proxy_config

            create_proxy_config(mc, rendered)
            before = look(mc, stack.project)
            target = f"{CONF_TARGET}/{CONF_NAME}"
            r = _run(mc, f"docker service update --detach --config-rm {shlex.quote(now_name)} --config-add "
                         f"{shlex.quote(f'source={cfg.name},target={target},mode=0444')} "
                         f"{shlex.quote(f'{stack.project}_{proxy}')}")
            if not r.ok:
                raise SwarmError(f"{where(mc)}: docker service update of {proxy} failed: {_said(r)}.")
            say(f"Proxy {proxy}: config {now_name} -> {cfg.name}; waiting up to {timeout:g} s for its tasks ...")
            result, _ = wait(mc, stack.project, [proxy], set(), {proxy}, {x.id for x in before.tasks}, timeout)
            if not result.ok:
                detail = "; ".join(f"{n}: {v.detail}" for n, v in result.verdicts.items())
                outcome["detail"] = detail
                raise SwarmError(f"The proxy {proxy} did not converge within {timeout:g} s with its new config: "
                                 f"{detail}. The swarm rolls a failed update back by itself.")
            removed, _ = prune_proxy_configs(mc, rendered)
            outcome.update(result=f"maintenance {'on' if on else 'off'}", detail=cfg.name)
    return f"proxy {proxy} now runs with config {cfg.name}" + (f"; removed {', '.join(removed)}" if removed else "")


def current_maintenance(mc: Any, project: str, proxy: str) -> Maintenance:
    """The maintenance state of the running proxy service (off when it has none)."""
    from .swarm_proxy import maintenance_of

    return maintenance_of(proxy_config_of(mc, project, proxy)[1])


# ---------------------------------------------------------------- the databases, on their nodes

@dataclass
class SwarmCompose(Compose):
    """Compose for a swarm stack's tasks on one node (``c``: a connection to it): ``exec`` runs in
    the service's running task container there (``docker exec``), ``ps``/``containers`` list the
    stack's containers on that node as compose's rows, ``model`` is the model rendered here with
    no ``depends_on``. Anything else compose would do has no meaning on a swarm node: refused."""

    task_containers: dict[str, str] = field(default_factory=dict)  # service -> its running task's container there
    node: str = ""
    rendered: dict[str, Any] = field(default_factory=dict)
    manager: Any = None  # the manager's connection: a stop is a scale of the service to 0 there
    mounts: dict[str, list[str]] = field(default_factory=dict)  # a stopped task's container -> its -v mounts
    volumes: dict[str, list[str]] = field(default_factory=dict)  # a stopped task's container -> its volumes' names
    replaced: dict[str, str] = field(default_factory=dict)  # a stopped task's container -> its successor's

    # -- a stop window (a backup or restore that needs the database down) -------------------------
    def stop_services(self, c: Any, services: list[str], timeout: float = 120.0) -> None:
        """Stop the services' tasks for a while: the swarm would start a new task for a container
        stopped by hand, so each service is scaled to 0 through the manager, and this node waits
        until its container is gone. Its volume mounts are kept first (``mounts``): the one-off
        containers of the window mount the same volumes by name (a removed task's container
        cannot lend them with --volumes-from). Refused, before anything stops, when the service's
        placement label is on any other ready node than this one: the new task of ``start_services``
        could land there, away from the data the window wrote."""
        from .swarm import list_nodes
        from .swarm_render import placement_label, stateful_services

        if self.manager is None:
            raise SwarmError(f"Stopping {', '.join(services)} needs the swarm's manager: not available here.")
        loose = [s for s in services if s not in stateful_services(self.rendered)]
        if loose:  # scaled back to 1 afterwards: only a service that runs one task pinned to its node
            raise SwarmError(f"{', '.join(loose)} would have to be stopped, which is not available on a swarm stack "
                             f"for a service that is not one task pinned to its node (nothing changed).")
        nodes = list_nodes(self.manager)
        for svc in services:
            label = placement_label(svc)
            others = [n.hostname for n in nodes if n.labels.get(label) == "true" and n.hostname != self.node
                      and n.state == "ready" and n.availability == "active"]
            if others:
                raise SwarmError(f"{svc} is not stopped (nothing changed): besides {self.node}, node(s) "
                                 f"{', '.join(others)} carry its label {label}=true, so its next task could start "
                                 f"there, away from the data on {self.node}. Keep the label on the node that holds "
                                 f"its data only (`memstack-ops swarm.label NODE {label}=false` on the others).")
        for svc in services:
            ctr = self.container(svc)
            r = run_argv(c, ["docker", "inspect", "--format", "{{json .Mounts}}", ctr], timeout=60)
            try:
                mounts = json.loads(r.stdout) if r.ok else None
            except ValueError:
                mounts = None
            if not isinstance(mounts, list):
                raise SwarmError(f"{svc} is not stopped (nothing changed): its container on {self.node} cannot be "
                                 f"inspected: {self.scrub(_said(r))}.")
            anonymous = [str(m.get("Destination")) for m in mounts if m.get("Type") == "volume"
                         and re.fullmatch(r"[0-9a-f]{64}", str(m.get("Name") or ""))]
            if anonymous:  # a new task gets a new anonymous volume: what the window wrote would be lost
                raise SwarmError(f"{svc} is not stopped (nothing changed): its data at {', '.join(anonymous)} is in an "
                                 f"anonymous volume, which its next task would not get. Give it a named volume in "
                                 f"the compose file (volumes: [NAME:{anonymous[0]}]) and deploy again.")
            # its volumes, and the folders its compose file binds (not what the engine mounts itself: secrets)
            declared = {str(v.get("target") or "").rstrip("/") for v in
                        ((self.rendered.get("services") or {}).get(svc) or {}).get("volumes") or []
                        if isinstance(v, dict)}
            self.volumes[ctr] = [str(m.get("Name")) for m in mounts if m.get("Type") == "volume"]
            self.mounts[ctr] = [f"{m.get('Name') if m.get('Type') == 'volume' else m.get('Source')}:"
                                f"{m.get('Destination')}" + ("" if m.get("RW", True) else ":ro")
                                for m in mounts if m.get("Type") == "volume" or
                                (m.get("Type") == "bind" and str(m.get("Destination")).rstrip("/") in declared)]
        args = " ".join(shlex.quote(f"{self.stack.project}_{s}=0") for s in services)
        r = _run(self.manager, f"docker service scale --detach {args}")
        if not r.ok:
            raise SwarmError(f"{where(self.manager)}: docker service scale {args} failed: {self.scrub(_said(r))}.")
        names = " ".join(shlex.quote(f"label={SERVICE_LABEL}={self.stack.project}_{s}") for s in services)
        script = (f"for i in $(seq 1 {int(timeout * 5)}); do busy=; for f in {names}; do "
                  f"[ -n \"$(docker ps -q --filter \"$f\")\" ] && busy=1; done; [ -z \"$busy\" ] && exit 0; "
                  f"sleep 0.2; done; exit 1")
        r = run_argv(c, ["sh", "-c", script], timeout=timeout + 30)
        if r.failed:
            raise SwarmError(f"{', '.join(services)} still run on {self.node} {timeout:g} s after being scaled to 0.")

    def start_services(self, c: Any, services: list[str], timeout: float) -> None:
        """The end of a stop window: each service scaled back to 1 through the manager, the swarm's
        convergence wait (a task with a healthcheck runs only once healthy), then its new task's
        container noted (``replaced``), which must be on this node, with the data."""
        from .swarm_deploy import look, wait

        if self.manager is None:
            raise SwarmError(f"Starting {', '.join(services)} needs the swarm's manager: not available here.")
        before = look(self.manager, self.stack.project)
        args = " ".join(shlex.quote(f"{self.stack.project}_{s}=1") for s in services)
        r = _run(self.manager, f"docker service scale --detach {args}")
        if not r.ok:
            raise SwarmError(f"{where(self.manager)}: docker service scale {args} failed: {self.scrub(_said(r))}.")
        result, _ = wait(self.manager, self.stack.project, services, set(), set(), {t.id for t in before.tasks},
                         timeout)
        if not result.ok:
            detail = "; ".join(f"{n}: {v.detail}" for n, v in sorted(result.verdicts.items()))
            raise SwarmError(f"{', '.join(services)} did not run again within {timeout:g} s: {detail}. `memstack-ops "
                             f"status` shows where its task is; `memstack-ops logs --service {services[0]}` why.")
        now = placed(self.manager, self.stack.project, services)
        for svc in services:
            p = now.get(svc)
            if p is None or p.node != self.node:
                raise SwarmError(f"{svc} runs again, but on {p.node if p else 'no node'}, not on {self.node}, where "
                                 f"its data is: keep its label on {self.node} only, and scale it to 0 and back.")
            old = self.task_containers.get(svc, "")
            self.replaced[old] = p.container
            self.task_containers[svc] = p.container

    def reset_services(self, c: Any, services: list[str], timeout: float) -> list[str]:
        """``db.reset`` on a swarm: each service stopped in a stop window, its named volumes removed
        on this node, started again on a fresh one; the volumes removed."""
        old = {s: self.container(s) for s in services}
        self.stop_services(c, services)
        gone: list[str] = []
        try:
            for s in services:
                # the stopped task's container may stay (exited) until the swarm reaps it, holding the volume
                run_argv(c, ["docker", "rm", "-f", old[s]], timeout=120)
                for v in self.volumes.get(old[s], []):
                    r = run_argv(c, ["docker", "volume", "rm", v], timeout=120)
                    if r.failed and "No such volume" not in (r.stderr or ""):
                        raise SwarmError(f"Removing volume {v} on {self.node} failed: {self.scrub(_said(r))}. "
                                         f"{', '.join(services)} start again on the data they had.")
                    gone.append(v)
        finally:
            self.start_services(c, services, timeout)
        return gone

    def current(self, container: str) -> str:
        """The container now running in place of ``container``, an ID or a task container's name
        (``<stack>_<service>.<slot>.<task>``); itself when it was not replaced."""
        seen = 0
        while container in self.replaced and seen < 100:  # a chain of windows, bounded
            container, seen = self.replaced[container], seen + 1
        for svc, now in self.task_containers.items():  # a name: its service's task now
            if container.startswith(f"{self.stack.project}_{svc}.") and container not in self.replaced.values():
                return now
        return container

    def model(self, c: Any) -> dict[str, Any]:
        return copy.deepcopy(self.rendered)

    def container(self, service: str) -> str:
        ctr = self.task_containers.get(service)
        if not ctr:
            raise SwarmError(f"No running task of {service} on swarm node {self.node}: `memstack-ops status` shows "
                             f"where it runs.")
        return ctr

    def run(self, c: Any, *args: str, **kw: Any) -> Any:
        rest = list(args)
        if rest[:1] == ["exec"]:
            rest.pop(0)
            tty = rest[:1] != ["-T"]
            if not tty:
                rest.pop(0)
            service, argv = rest[0], rest[1:]
            return run_argv(c, ["docker", "exec", "-i", *(["-t"] if tty else []), self.container(service), *argv],
                            **kw)
        if rest[:1] == ["logs"]:
            tail = rest[rest.index("--tail") + 1] if "--tail" in rest else "100"
            return run_argv(c, ["docker", "logs", "--tail", tail, self.container(rest[-1])], **kw)
        raise SwarmError(f"`docker compose {' '.join(args[:1])}` has no meaning for swarm stack {self.stack.project} "
                         f"(node {self.node}): the swarm runs its services. This step is not available on a swarm "
                         f"stack yet.")

    def ps(self, c: Any, services: Iterable[str] = ()) -> list[dict[str, Any]]:
        return self.containers(c, services)

    def containers(self, c: Any, services: Iterable[str] = ()) -> list[dict[str, Any]]:
        fmt = ("{{json .Name}}\t{{json .Config.Labels}}\t{{json .State.Status}}\t"
               "{{if .State.Health}}{{json .State.Health.Status}}{{else}}\"\"{{end}}\t"
               "{{.State.ExitCode}}\t{{json .Image}}\t{{.Id}}")
        script = ('ids=$(docker ps --all --quiet --no-trunc --filter "label=$1") || exit 1; '
                  '[ -z "$ids" ] || docker inspect --format "$2" $ids 2>/dev/null; true')
        r = run_argv(c, ["sh", "-c", script, "sh", f"{NAMESPACE}={self.stack.project}", fmt], timeout=60)
        if r.failed:
            raise SwarmError(f"{self.node}: listing the stack's containers failed: {self.scrub(_said(r))}.")
        want, out = set(services), []
        for line in r.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) != 7:
                continue
            name, lab, state, health, code, image, cid = parts
            labels = json.loads(lab) or {}
            svc = str(labels.get(SERVICE_LABEL) or "").removeprefix(f"{self.stack.project}_")
            if not svc or (want and svc not in want):
                continue
            out.append({"Service": svc, "Name": json.loads(name).lstrip("/"), "ID": cid, "State": json.loads(state),
                        "Health": json.loads(health), "ExitCode": int(code) if code.isdigit() else code,
                        "Labels": ",".join(f"{k}={v}" for k, v in labels.items()), "ImageID": json.loads(image)})
        # the task the manager named first, then the running ones (old task containers stay exited)
        return sorted(out, key=lambda row: (row["Service"], row["ID"] != self.task_containers.get(row["Service"]),
                                            row["State"] != "running", row["Name"]))

    def logs(self, c: Any, service: str, tail: int = 50) -> str:
        r = run_argv(c, ["docker", "logs", "--tail", str(tail), self.container(service)], timeout=60)
        return self.scrub((r.stdout + r.stderr).rstrip())


@dataclass
class Placed:
    """A running task of a service: the node (hostname, ID) and its container ID."""

    service: str
    node_id: str
    node: str
    container: str


def placed(mc: Any, project: str, services: Iterable[str]) -> dict[str, Placed]:
    """service -> its running task (the manager's view); a service with none is left out."""
    script = ('for s in "$@"; do docker service ps -q --no-trunc --filter desired-state=running "$s" '
              '2>/dev/null; done')
    full = [f"{project}_{s}" for s in services]
    r = _run(mc, f"sh -c {shlex.quote(script)} sh {shlex.join(full)}")
    ids = r.stdout.split() if r.ok else []
    if not ids:
        return {}
    r = _run(mc, f"docker inspect --type task {shlex.join(ids)}")
    if not r.ok:
        raise SwarmError(f"{where(mc)}: cannot inspect the tasks of stack {project}: {_said(r)}.")
    nodes = _node_names(mc)
    ids_r = _run(mc, f"docker service inspect --format '{{{{.ID}}}} {{{{.Spec.Name}}}}' {shlex.join(full)}")
    by_service = {i: n.removeprefix(f"{project}_") for i, _, n in
                  (ln.partition(" ") for ln in (ids_r.stdout or "").splitlines()) if n}
    out: dict[str, Placed] = {}
    try:
        tasks = json.loads(r.stdout or "[]")
    except ValueError:
        raise SwarmError(f"{where(mc)}: the engine's answer about the tasks of stack {project} is not JSON this tool "
                         f"reads: {r.stdout.strip()[:300]!r}.") from None
    for t in tasks:
        st = t.get("Status") or {}
        svc = by_service.get(str(t.get("ServiceID") or ""))
        cid = str((st.get("ContainerStatus") or {}).get("ContainerID") or "")
        if svc and st.get("State") == "running" and cid:
            out.setdefault(svc, Placed(svc, str(t.get("NodeID")), nodes.get(str(t.get("NodeID")), ""), cid))
    return out


def _node_names(mc: Any) -> dict[str, str]:
    from .swarm import list_nodes

    return {n.id: n.hostname for n in list_nodes(mc)}


def database_services(model: Mapping[str, Any], kind: str | None = None, only: Iterable[str] = ()) -> list[str]:
    """The model's database services, of ``kind`` when given, filtered by service name or kind."""
    from .kinds import DB_KINDS, kind_of

    only = [o for o in only if o]
    return [n for n, s in (model.get("services") or {}).items()
            if kind_of(s) in DB_KINDS and (kind is None or kind_of(s) == kind)
            and (not only or n in only or kind_of(s) in only)]


@contextmanager
def node_targets(c: Any, settings: Settings, services: Iterable[str] | None = None, kind: str | None = None,
                 only: Iterable[str] = (), absent_ok: bool = False) -> Iterator[list[tuple[Target, list[str]]]]:
    """[(Target on a node, the selected services whose task runs there)], one per node: the
    connections are closed on the way out. ``services`` (names; default every database of
    ``kind``, filtered by ``only``) must each have a running task; with ``absent_ok`` one with
    none is named in a warning and left out (at least one must run)."""
    from invoke import Context

    from .remote import RemoteError
    from .remote.inventory import inventory
    from .remote.ssh import connect
    from .swarm import Node, inventory_name, list_nodes, manager
    from .target import target

    local = target(Context(), settings)
    model = local.compose.model(local.c)
    names = list(services) if services else database_services(model, kind, only)
    if not names:
        raise ConfigError(f"Stack {local.stack.name} has no {kind or 'database'} service"
                          + (f" matching {', '.join(only)}" if only else "") + ".")
    swarm_model = copy.deepcopy(model)
    for svc in (swarm_model.get("services") or {}).values():
        svc.pop("depends_on", None)  # the swarm starts services in no order, and runs no depends_on
    project = local.stack.project
    hosts = inventory(settings)[1]
    conns: list[Any] = []
    try:
        with manager(c, settings) as (mc, boss):
            found = placed(mc, project, names)
            absent = [n for n in names if n not in found]
            if absent and absent_ok and found:
                from .output import warn

                warn(f"warning: no running task of {', '.join(absent)} in swarm stack {project}, so the node that "
                     f"holds its backups is not known and is left out (`memstack-ops status` shows why).")
            elif absent:
                raise SwarmError(f"No running task of {', '.join(absent)} in swarm stack {project}: `memstack-ops "
                                 f"status` shows why (deploy it with `memstack-ops deploy --engine swarm`).")
            by_node: dict[str, list[Placed]] = {}
            for p in found.values():
                by_node.setdefault(p.node_id, []).append(p)
            nodes: dict[str, Node] = {n.id: n for n in list_nodes(mc)}
            out = []
            for node_id, tasks in by_node.items():
                node = nodes.get(node_id)
                label = node.hostname if node else node_id[:12]
                if node_id == boss.node_id:
                    nc = mc  # the manager runs it: no second connection
                else:
                    host = hosts.get(inventory_name(settings, node)) if node else None
                    if host is None:
                        raise ConfigError(f"Swarm node {label} runs {', '.join(p.service for p in tasks)} but is no "
                                          f"inventory host, so the tool cannot reach it: add a [hosts.NAME] table "
                                          f"with its address (and swarm = \"worker\").")
                    try:
                        nc = connect(host, getattr(c, "config", None))
                    except RemoteError as e:
                        raise SwarmError(f"Swarm node {label} runs {', '.join(p.service for p in tasks)}, and it "
                                         f"is unreachable: {e}") from None
                    conns.append(nc)
                out.append((node_target(nc, settings, local, swarm_model, label,
                                        {p.service: p.container for p in tasks}, manager=mc),
                            [p.service for p in tasks]))
            for t, svcs in out:
                say(f"{', '.join(svcs)}: on swarm node {t.where}")
            yield out
    finally:
        for conn in conns:
            conn.close()


def node_target(nc: Any, settings: Settings, local: Target, model: dict[str, Any], node: str,
                tasks: dict[str, str], manager: Any = None) -> Target:
    """The Target of a swarm stack on one node: this machine's stack files and env (migrations,
    secrets to mask), commands on the node. No release is deployed on a swarm node (no
    ``release_dir``); its ``deploy_root`` is the stack's folder there, so that backups go to
    ``<root>/backups/<stack>`` as on a compose host."""
    from .swarm import host_of

    compose = SwarmCompose(local.stack, secrets=dict(local.env), found=set(local.compose.found), task_containers=tasks,
                           node=node, rendered=model, manager=manager)
    host = host_of(nc)
    base = host.root_for(local.stack.name) if host is not None else f"/var/lib/memstack-ops/{local.stack.name}"
    return Target(nc, settings, local.stack, compose, dict(local.env), deploy_root=base)


@contextmanager
def db_targets(c: Any, settings: Settings, kind: str | None = None, services: Iterable[str] = (),
               only: Iterable[str] = ()) -> Iterator[list[tuple[Target, list[str]]]]:
    """Where database tasks run, for any engine: compose, [(the usual Target, ``services``)];
    swarm, ``node_targets``."""
    if not is_swarm(settings):
        from .target import target

        yield [(target(c, settings), list(services))]
        return
    with node_targets(c, swarm_settings(c, settings), list(services) or None, kind, only) as found:
        yield found


@contextmanager
def backup_targets(c: Any, settings: Settings) -> Iterator[list[Target]]:
    """The Targets of the nodes that hold a swarm stack's backup sets: a set is made on the node
    that runs its database's task, in ``<root>/backups/<stack>`` there (the databases are pinned
    to their labelled nodes, so that is where their sets stay)."""
    with node_targets(c, swarm_settings(c, settings), absent_ok=True) as found:
        yield [t for t, _ in found]


@dataclass
class NodePart:
    """What ``backup.all``/``volumes``/``binds`` of a swarm stack takes on one node: the databases
    whose task runs there (dumped in their containers), the named volumes and the bind-mounted
    folders (by source) only services running there use (a tar from a one-off container: the
    volume or folder is that node's)."""

    databases: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)


def _bind_users(model: Mapping[str, Any], project_dir: str) -> dict[str, tuple[str, list[str]]]:
    """source -> (its key, the services that mount it) of the model's writable bind mounts."""
    from .binds import users_by_source

    return users_by_source(dict(model), project_dir, data_only=True)


def bind_keys(model: Mapping[str, Any], project_dir: str, sources: Iterable[str]) -> list[tuple[str, str]]:
    """(key, source) of ``sources`` among the model's writable binds."""
    found = _bind_users(model, project_dir)
    return [(found[s][0], s) for s in sources if s in found]


def _wanted_binds(found: dict[str, tuple[str, list[str]]], binds: Iterable[str]) -> list[str]:
    """The sources ``binds`` names (a key as backup.list shows it, ./ optional, a source, or a
    service for every folder it mounts); every source when none is named. Unknown: an error."""
    from .backup import BackupError

    binds = list(binds)
    if not binds:
        return list(found)
    out = []
    for b in binds:
        k = b if b.startswith(("/", "./")) else "./" + b
        hit = [s for s, (key, users) in found.items() if key == k or s == b or b in users]
        if not hit:
            raise BackupError(f"Not a bind-mounted data folder of the stack: {b}. Its data folders: "
                              f"{', '.join(key for key, _ in found.values()) or 'none'}. Nothing was done.")
        out += [s for s in hit if s not in out]
    return out


def backup_services(model: Mapping[str, Any], kind: str, volumes: Iterable[str] = (),
                    exclude: Iterable[str] = (), binds: Iterable[str] = (), project_dir: str = "") -> list[str]:
    """The stateful services whose node a set of ``kind`` (all, volumes or binds) needs to know:
    for ``all`` every one not excluded; for ``volumes``/``binds`` those that use the volumes or
    folders wanted (default all)."""
    from .backup.engines.volumes import stack_volumes
    from .swarm_render import stateful_services

    pinned = list(stateful_services(model))
    if kind == "all":
        exclude = set(exclude)
        return [n for n in pinned if n not in exclude]
    if kind == "binds":
        found = _bind_users(model, project_dir)
        users = {s for src in _wanted_binds(found, binds) for s in found[src][1]}
        return [n for n in pinned if n in users]
    wanted = set(volumes)
    users = {s for v in stack_volumes(dict(model)) if not wanted or v.key in wanted for s in v.services}
    return [n for n in pinned if n in users]


def backup_parts(model: Mapping[str, Any], on_node: Mapping[str, list[str]], kind: str, volumes: Iterable[str] = (),
                 exclude: Iterable[str] = (), verb: str = "backed up", binds: Iterable[str] = (),
                 project_dir: str = "") -> tuple[dict[str, NodePart], list[str]]:
    """Per node (``on_node``: node -> the stateful services whose task runs there), what a set of
    ``kind`` (all, volumes or binds) takes there; and one note per thing left out, with why (never
    skipped silently). A volume or folder named that no one node holds is an error, as is an
    unknown one. Pure: the caller found where the tasks run (bind keys are relative to
    ``project_dir``, the compose file's folder, as on a compose host)."""
    from .backup import BackupError
    from .backup.engines.volumes import stack_volumes
    from .kinds import DB_KINDS, kind_of

    services = model.get("services") or {}
    exclude = set(exclude)
    node_of = {s: n for n, names in on_node.items() for s in names}
    parts: dict[str, NodePart] = {n: NodePart() for n in on_node}
    notes: list[str] = []
    dbs = {n for n, s in services.items() if kind_of(s) in DB_KINDS}
    if kind == "all":
        for name in sorted(dbs - exclude):
            if name in node_of:  # one whose backup stops it (neo4j): a stop window on its node
                parts[node_of[name]].databases.append(name)
    if kind == "binds":
        return _bind_parts(model, node_of, parts, notes, binds, project_dir, verb, set()), notes
    vols = {v.key: v for v in stack_volumes(dict(model))}
    wanted = list(volumes) or [k for k in vols if k not in exclude]
    unknown = [k for k in wanted if k not in vols]
    if unknown:
        raise BackupError(f"Unknown volume(s) {', '.join(unknown)}; the stack's named volumes: "
                          f"{', '.join(vols) or 'none'}. Nothing was done.")
    for key in wanted:
        v = vols[key]
        if kind == "all" and set(v.services) & dbs:
            continue  # a database's own files: its dump holds them
        nodes = {node_of.get(s) for s in v.services}
        if v.services and len(nodes) == 1 and None not in nodes:
            parts[str(nodes.pop())].volumes.append(key)
            continue
        why = (f"used by {', '.join(s for s in v.services if s not in node_of)}, which is not one task pinned to "
               f"a node (each node that runs it has its own copy of the volume)" if v.services else
               "no service uses it")
        if volumes:
            raise BackupError(f"Volume {key} cannot be {verb} on a swarm stack: {why}. Nothing was done.")
        notes.append(f"volume {key}: not included: {why}")
    if kind == "all":
        return _bind_parts(model, node_of, parts, notes, (), project_dir, verb, exclude, dbs), notes
    return {n: p for n, p in parts.items() if p.databases or p.volumes or p.binds}, notes


def _bind_parts(model: Mapping[str, Any], node_of: Mapping[str, str], parts: dict[str, NodePart], notes: list[str],
                binds: Iterable[str], project_dir: str, verb: str, leave: set[str],
                dbs: frozenset[str] | set[str] = frozenset()) -> dict[str, NodePart]:
    """Add to ``parts`` the folders (sources) wanted whose users all run on one node; note (or,
    when named, refuse) the others. ``leave``: services, keys or sources left out (excluded);
    ``dbs``: databases, whose own folders their dumps hold (for backup.all)."""
    from .backup import BackupError

    found = _bind_users(model, project_dir)
    named = list(binds)
    for src in _wanted_binds(found, named):
        key, users = found[src]
        if key in leave or src in leave or set(users) & leave:
            continue  # excluded
        own = sorted(set(users) & dbs)
        if own:
            notes.append(f"folder {key}: not included: the files of database {own[0]}, which its dump in this set "
                         f"holds (backup.binds takes it)")
            continue
        nodes = {node_of.get(s) for s in users}
        if len(nodes) == 1 and None not in nodes:
            parts[str(nodes.pop())].binds.append(src)
            continue
        why = (f"mounted by {', '.join(s for s in users if s not in node_of)}, which is not one task pinned to a "
               f"node (each node that runs it has its own folder)")
        if named:
            raise BackupError(f"Folder {key} cannot be {verb} on a swarm stack: {why}. Nothing was done.")
        notes.append(f"folder {key}: not included: {why}")
    return {n: p for n, p in parts.items() if p.databases or p.volumes or p.binds}


def refuse_here(settings: Settings, what: str) -> None:
    """Refuse a step that has no swarm form yet, naming it."""
    if is_swarm(settings):
        raise Refused(f"{what} is not available on a swarm stack yet (engine = \"swarm\"): nothing was done. "
                      f"restore.all --from NAME restores a set's databases, volumes and folders on their node; "
                      f"every other backup.* and restore.* runs on the node of the task whose data it is.")


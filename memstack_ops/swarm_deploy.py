"""``deploy --engine swarm``: one stack across the inventory's swarm (issue 15).

Runs once, on the swarm's manager (``swarm.manager``: the -H host when its engine is one, else the
inventory's manager over SSH):

1. the stack's compose model is rendered here (compose's own interpolation with this machine's env
   files), then the stack file (memstack_ops/swarm_render.py); nothing has changed yet;
2. refused before any change: a stateful service whose placement label no ready, active node
   carries (named, with the ``swarm.label`` command that fixes it), and, when images are shipped,
   a node that may run a service but is no inventory host;
3. the images are shipped (memstack_ops/remote/images.py, only what a node lacks) to every node
   that may run them: the labelled nodes for a stateful service, every active node for the others;
4. the Swarm secrets the stack lacks are created, each value on ``docker secret create``'s stdin
   (never in an argv, a file or a log), labelled ``memstack-ops.stack=<stack>``;
5. ``docker stack deploy --resolve-image never`` with the stack file written 0600 to a temporary
   file on the manager and removed afterwards (it holds no secret value anyway). The swarm runs no
   ``depends_on``, so the services this deploy creates are deployed in waves (``start_waves``):
   each wave's file adds the services whose dependencies the earlier waves started, and is
   waited for (healthy, or a job's exit 0) before the next; ``docker stack deploy`` removes no
   service a file leaves out. Existing services count as started: their updates roll in the first
   wave's deploy;
6. the tool's own convergence wait (``wait``), bounded by the stack's timeout: no
   ``--detach=false``, which hangs when a one-shot service completes (docker/cli#5299) and does
   not exist in 20.10 clients;
7. on failure: the failing task's error (``Status.Err``, exit code, node) and its last log lines,
   the services this run updated rolled back (``docker service rollback``; the ones Swarm rolled
   back by itself, failure_action rollback, are waited for), a non-zero exit naming the service;
8. after convergence, the stack's Swarm secrets no service uses any more are removed (a changed
   password has a new secret name: moby/moby#33808).

How a service is judged (``judge``), from the manager's ``docker service inspect`` and
``docker inspect`` of the stack's tasks, every node's tasks at once:

- a task's health needs no visit to its node: a task whose container has a healthcheck stays in
  state ``starting`` until the check passes (moby/moby#24545), and the engine fails the task when
  its container turns unhealthy later; so state ``running`` means started and healthy;
- a replicated service is converged when exactly its ``replicas`` tasks are desired running and
  running;
- a service whose task template this run changed is an update: it is converged only when Swarm
  says the update ``completed`` (every task replaced, and watched for ``monitor``, which the
  renderer makes at least start_period + interval x retries) and its tasks run as above;
  ``paused`` or ``rollback_*`` is a failed update. Right after the deploy its UpdateStatus is
  empty until the engine's updater starts; a change that replaces no task (none is "dirty") never
  gets one, so an empty status with no new task and every replica running for ``QUIET_POLLS``
  polls in a row counts as converged;
- a one-shot job (restart_policy none; waited on with service_completed_successfully) is judged
  by its newest task's exit code: ``complete`` is success, ``failed``/``rejected`` its error. The
  20.10 stack file cannot say ``replicated-job`` (moby/moby#41895), so jobs are replicated
  services with restart none whose updates never roll back (the renderer's failure_action
  continue);
- Swarm restarts a crashing task of a new service by itself (services start in no order on a
  swarm: an API may crash until its database is up), so such a service fails at the timeout,
  with its newest task's error and logs.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, MemstackError, Refused
from .output import say, warn
from .swarm import SwarmError, _run, _said
from .target import where

if TYPE_CHECKING:
    from .config import Settings
    from .remote.inventory import Host
    from .swarm import Node
    from .swarm_render import Rendered

NAMESPACE = "com.docker.stack.namespace"
POLL = 1.0  # seconds between two looks at the stack
QUIET_POLLS = 3
FAILED = ("failed", "rejected", "orphaned")
ROLLED_BACK = ("rollback_started", "rollback_paused", "rollback_completed")
LOG_LINES = 30

# The stack file arrives on stdin: written 0600 (umask), deployed, removed however the deploy ends.
DEPLOY = ('umask 077; f=$(mktemp "${TMPDIR:-/tmp}/memstack-ops-stack.XXXXXX") || exit 1; '
          'trap \'rm -f "$f"\' EXIT; cat > "$f" && docker stack deploy --resolve-image never -c "$f" "$1"')
# One look at the stack: its services, then every task (all nodes, with their history).
LOOK = ('ids=$(docker service ls -q --filter "label=com.docker.stack.namespace=$1"); '
        'if [ -n "$ids" ]; then docker service inspect $ids; else echo "[]"; fi; echo "@@@"; '
        't=$(docker stack ps -q --no-trunc "$1" 2>/dev/null); '
        'if [ -n "$t" ]; then docker inspect --type task $t 2>/dev/null; else echo "[]"; fi; true')


# ---------------------------------------------------------------- what the manager says

@dataclass
class Service:
    id: str
    name: str  # the stack's service name (without the ``<stack>_`` prefix)
    replicas: int | None  # None: global mode
    template: str  # the task template, as canonical JSON: what an update changes
    update_state: str = ""  # UpdateStatus.State ("" when none)
    update_message: str = ""
    previous: bool = False  # has a PreviousSpec (docker service rollback can go back to it)


@dataclass
class Task:
    id: str
    service_id: str
    slot: int
    node_id: str
    desired: str
    state: str
    err: str = ""
    exit_code: int | None = None
    created: str = ""

    @property
    def order(self) -> str:
        """A sort key for CreatedAt (its fraction has a varying number of digits)."""
        head, _, frac = self.created.rstrip("Z").partition(".")
        return f"{head}.{frac.ljust(9, '0')}"


def parse_services(text: str, stack: str) -> dict[str, Service]:
    out = {}
    for s in json.loads(text or "[]"):
        spec = s.get("Spec") or {}
        full = str(spec.get("Name") or "")
        name = full[len(stack) + 1:] if full.startswith(f"{stack}_") else full
        mode = spec.get("Mode") or {}
        replicas = None if "Global" in mode else int(((mode.get("Replicated") or {}).get("Replicas")) or 0)
        status = s.get("UpdateStatus") or {}
        out[name] = Service(id=str(s.get("ID") or ""), name=name, replicas=replicas,
                            template=json.dumps(spec.get("TaskTemplate") or {}, sort_keys=True),
                            update_state=str(status.get("State") or ""),
                            update_message=str(status.get("Message") or ""), previous=bool(s.get("PreviousSpec")))
    return out


def parse_tasks(text: str) -> list[Task]:
    out = []
    for t in json.loads(text or "[]"):
        st = t.get("Status") or {}
        cs = st.get("ContainerStatus") or {}
        code = cs.get("ExitCode")
        out.append(Task(id=str(t.get("ID") or ""), service_id=str(t.get("ServiceID") or ""),
                        slot=int(t.get("Slot") or 0), node_id=str(t.get("NodeID") or ""),
                        desired=str(t.get("DesiredState") or ""), state=str(st.get("State") or ""),
                        err=str(st.get("Err") or ""), exit_code=int(code) if code is not None else None,
                        created=str(t.get("CreatedAt") or "")))
    return out


@dataclass
class Look:
    services: dict[str, Service]
    tasks: list[Task]
    nodes: dict[str, str] = field(default_factory=dict)  # node ID -> hostname

    def of(self, name: str) -> list[Task]:
        svc = self.services.get(name)
        return sorted((t for t in self.tasks if svc and t.service_id == svc.id), key=lambda t: t.order)


def look(mc: Any, stack: str) -> Look:
    r = _run(mc, f"sh -c {shlex.quote(LOOK)} sh {shlex.quote(stack)}")
    services, _, tasks = (r.stdout or "").partition("@@@")
    if not r.ok or not tasks:
        raise SwarmError(f"{where(mc)}: cannot list the services of stack {stack}: {_said(r)}.")
    try:
        return Look(parse_services(services, stack), parse_tasks(tasks))
    except ValueError as e:
        raise SwarmError(f"{where(mc)}: the engine's answer about stack {stack} is not JSON this tool reads "
                         f"({e}).") from None


# ---------------------------------------------------------------- judging one service

@dataclass
class Verdict:
    state: str  # ok | wait | failed
    detail: str = ""
    task: Task | None = None  # the failing task, when one is to blame


def _failed_task(tasks: list[Task], message: str = "") -> Task | None:
    """The task to blame: the one the engine's message names, else the newest failed one."""
    named = [t for t in tasks if t.id and t.id in message]
    if named:
        return named[-1]
    failed = [t for t in tasks if t.state in FAILED or t.state == "complete" and t.exit_code not in (0, None)]
    return failed[-1] if failed else None


def judge(svc: Service, tasks: list[Task], job: bool, updated: bool, before: set[str],
          quiet: int = 0, rolling_back: bool = False) -> Verdict:
    """Whether one service has converged (see the module docstring). ``tasks``: its tasks, oldest
    first; ``updated``: this run changed its task template (and it existed before); ``before``:
    the IDs of the tasks that existed before the deploy; ``quiet``: how many looks in a row found
    it with no update status, no new task and every replica running; ``rolling_back``: it is being
    rolled back (by the swarm or ``docker service rollback``), which ends in rollback_completed."""
    if job and not rolling_back:
        if not tasks:
            return Verdict("wait", "no task yet")
        last = tasks[-1]
        if last.state == "complete":
            return Verdict("ok", "completed (exit 0)")
        if last.state in FAILED:
            code = f"exit {last.exit_code}" if last.exit_code is not None else last.state
            return Verdict("failed", f"the one-shot job failed ({code}): {last.err or last.state}", last)
        return Verdict("wait", f"job {last.state}")
    running = [t for t in tasks if t.desired == "running" and t.state == "running"]
    starting = [t for t in tasks if t.desired == "running" and t.state != "running"]
    want = svc.replicas if svc.replicas is not None else max(1, len(running) + len(starting))
    counts = f"{len(running)}/{want} running"
    if rolling_back:
        if svc.update_state in ("paused", "rollback_paused"):
            return Verdict("failed", f"its rollback stopped ({svc.update_state}: {svc.update_message})")
        if svc.update_state != "rollback_completed":
            return Verdict("wait", f"rolling back ({svc.update_state or 'not started'}), {counts}")
        if job:
            return Verdict("ok", "rolled back")
    elif updated:
        if svc.update_state in ("paused", *ROLLED_BACK):
            blamed = _failed_task([t for t in tasks if t.id not in before], svc.update_message)
            why = f"{blamed.err or blamed.state}" if blamed else svc.update_message
            return Verdict("failed", f"its update failed ({svc.update_state}: {svc.update_message}): {why}",
                           blamed)
        if svc.update_state == "updating":
            return Verdict("wait", f"updating, {counts}")
        if not svc.update_state:
            fresh = [t for t in tasks if t.id not in before]
            if fresh or quiet < QUIET_POLLS:
                return Verdict("wait", f"update not started yet, {counts}")
    if len(running) == want and not starting:
        return Verdict("ok", counts + (" (rolled back)" if rolling_back else ""))
    return Verdict("wait", counts + (f", {len(starting)} starting" if starting else ""))


# ---------------------------------------------------------------- the wait

@dataclass
class Outcome:
    ok: bool
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    timed_out: bool = False


def wait(mc: Any, stack: str, names: Iterable[str], jobs: set[str], updated: set[str], before: set[str],
         timeout: float, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic, rolling_back: bool = False) -> tuple[Outcome, Look]:
    """Look at the stack until every service of ``names`` has converged, one fails, or
    ``timeout`` seconds pass. Bounded in looks as well as time."""
    names = list(names)
    deadline = clock() + timeout
    quiet: dict[str, int] = dict.fromkeys(names, 0)
    shown: dict[str, str] = {}
    last = Look({}, [])
    for _ in range(int(timeout / POLL) + 2):
        last = look(mc, stack)
        verdicts: dict[str, Verdict] = {}
        for name in names:
            svc = last.services.get(name)
            if svc is None:
                verdicts[name] = Verdict("wait", "not created yet")
                continue
            tasks = last.of(name)
            v = judge(svc, tasks, name in jobs, name in updated, before, quiet[name], rolling_back)
            calm = (not svc.update_state and not any(t.id not in before for t in tasks)
                    and svc.replicas is not None
                    and sum(t.desired == "running" and t.state == "running" for t in tasks) == svc.replicas)
            quiet[name] = quiet[name] + 1 if calm else 0
            verdicts[name] = v
            if shown.get(name) != f"{v.state} {v.detail}" and v.state != "wait":
                say(f"  {name}: {v.detail}")
            shown[name] = f"{v.state} {v.detail}"
        if any(v.state == "failed" for v in verdicts.values()):
            return Outcome(False, verdicts), last
        if all(v.state == "ok" for v in verdicts.values()):
            return Outcome(True, verdicts), last
        if clock() >= deadline:
            return Outcome(False, verdicts, timed_out=True), last
        sleep(min(POLL, max(0.0, deadline - clock())))
    return Outcome(False, verdicts, timed_out=True), last


def task_logs(mc: Any, task: Task, scrub: Callable[[str], str], lines: int = LOG_LINES) -> str:
    """The last log lines of one task, from its node through the manager (bounded: a node that is
    down would make ``docker service logs`` wait)."""
    r = _run(mc, f"timeout 20 docker service logs --no-trunc --raw --tail {lines} {shlex.quote(task.id)}")
    text = ((r.stdout or "") + (r.stderr or "")).strip()
    return scrub(text) if text else "(no log lines)"


def rollback(mc: Any, stack: str, names: Iterable[str], look_now: Look) -> tuple[list[str], list[str], list[str]]:
    """Roll back the services updated in this run: (by the swarm itself, by this tool, not possible)."""
    by_swarm: list[str] = []
    by_us: list[str] = []
    failed: list[str] = []
    for name in names:
        svc = look_now.services.get(name)
        if svc is None:
            continue
        if svc.update_state in ROLLED_BACK:
            by_swarm.append(name)
            continue
        r = _run(mc, f"docker service rollback --detach {shlex.quote(f'{stack}_{name}')}")
        if r.ok:
            by_us.append(name)
        else:
            failed.append(f"{name} ({_said(r)})")
    return by_swarm, by_us, failed


# ---------------------------------------------------------------- placement and images

def check_placement(model: Mapping[str, Any], nodes: list[Node], stack: str) -> None:
    """Refuse, before any change, a stateful service no ready, active node may run, and an edge
    proxy when no ready, active node is labelled for it."""
    from .proxy import proxy_service
    from .swarm_proxy import EDGE_LABEL
    from .swarm_render import stateful_services

    problems = []
    for name, label in sorted(stateful_services(model).items()):
        labelled = [n for n in nodes if n.labels.get(label) == "true"]
        usable = [n for n in labelled if n.state == "ready" and n.availability == "active"]
        if not labelled:
            problems.append(f"{name} runs only on a node labelled {label}=true, and no node has that label: set it "
                            f"on the node that is to hold its data with `memstack-ops swarm.label NODE "
                            f"{label}=true` (or labels = {{ \"{label}\" = \"true\" }} in that host's inventory "
                            f"table, then swarm.join)")
        elif not usable:
            problems.append(f"{name} runs only on a node labelled {label}=true, and "
                            f"{', '.join(f'{n.hostname} ({n.state}, {n.availability})' for n in labelled)} "
                            f"cannot take tasks now: bring it back (swarm.activate) or label another node")
    edge = proxy_service(model)
    if edge is not None:
        labelled = [n for n in nodes if n.labels.get(EDGE_LABEL) == "true"]
        if not any(n.state == "ready" and n.availability == "active" for n in labelled):
            problems.append(f"the edge proxy {edge} runs on the node(s) labelled {EDGE_LABEL}=true, publishing its "
                            f"ports there, and "
                            + (f"{', '.join(f'{n.hostname} ({n.state}, {n.availability})' for n in labelled)} "
                               f"cannot take tasks now: bring one back (swarm.activate) or label another node"
                               if labelled else
                               f"no node has that label: set it on the node(s) whose address clients reach with "
                               f"`memstack-ops swarm.label NODE {EDGE_LABEL}=true` (or labels = "
                               f"{{ \"{EDGE_LABEL}\" = \"true\" }} in that host's inventory table, then swarm.join)"))
    if problems:
        raise Refused(f"Stack {stack} was not deployed (nothing changed): " + "; ".join(problems) + ".")


def nodes_for(model: Mapping[str, Any], nodes: list[Node]) -> dict[str, list[Node]]:
    """service -> the nodes that may run it: the labelled ones for a stateful service and the edge
    proxy, every ready, active node for the others."""
    from .proxy import proxy_service
    from .swarm_proxy import EDGE_LABEL
    from .swarm_render import stateful_services

    pinned = stateful_services(model)
    edge = proxy_service(model)
    if edge is not None:
        pinned[edge] = EDGE_LABEL
    ready = [n for n in nodes if n.state == "ready" and n.availability == "active"]
    return {name: [n for n in ready if name not in pinned or n.labels.get(pinned[name]) == "true"]
            for name in model.get("services") or {}}


def image_plan(settings: Settings, model: Mapping[str, Any], nodes: list[Node],
               ship_all: bool) -> dict[str, tuple[Host | None, Node, set[str]]]:
    """node hostname -> (its inventory host, the node, the images to ship there). Refuses a node
    that needs images shipped but is no inventory host."""
    from .remote.inventory import inventory
    from .swarm import inventory_name

    hosts = inventory(settings)[1]
    plan: dict[str, tuple[Host | None, Node, set[str]]] = {}
    for name, where_ in nodes_for(model, nodes).items():
        image = str((model["services"][name] or {}).get("image") or "")
        for n in where_:
            host = hosts.get(inventory_name(settings, n))
            plan.setdefault(n.hostname, (host, n, set()))[2].add(image)
    orphans = sorted(h for h, (host, _, _) in plan.items() if host is None)
    shipping = ship_all or any(host is not None and host.ship_images for host, _, _ in plan.values())
    if orphans and shipping:
        raise ConfigError(f"Swarm node(s) {', '.join(orphans)} may run services of this stack but are no inventory "
                          f"host, so the images cannot be shipped to them: add a [hosts.NAME] table with the node's "
                          f"address, or drain them (swarm.drain NODE).")
    return plan


def ship_images(settings: Settings, plan: Mapping[str, tuple[Host | None, Node, set[str]]], ship_all: bool,
                config: Any = None, cancel: Any = None) -> list[str]:
    """Ship each node's images (only what it lacks), nodes in parallel; one line per node."""
    from concurrent.futures import ThreadPoolExecutor

    from .remote.images import ship
    from .remote.ssh import connect

    todo = [(node, host, images) for node, (host, _, images) in sorted(plan.items())
            if host is not None and (ship_all or host.ship_images) and images]

    def one(item: tuple[str, Host, set[str]]) -> str:
        node, host, images = item
        conn = connect(host, config)
        try:
            return f"node {node} ({host.name}): {ship(conn, sorted(images), cancel=cancel).describe()}"
        finally:
            conn.close()

    if not todo:
        return []
    with ThreadPoolExecutor(max_workers=min(4, len(todo)), thread_name_prefix="ship") as pool:
        return list(pool.map(one, todo))


# ---------------------------------------------------------------- secrets

def create_secrets(mc: Any, rendered: Rendered) -> list[str]:
    """Create the stack's Swarm secrets the swarm lacks, each value on stdin only."""
    from .compose import Script

    plan = rendered.secrets
    if not plan.keys:
        return []
    r = _run(mc, "docker secret ls --format '{{.Name}}'")
    if not r.ok:
        raise SwarmError(f"{where(mc)}: cannot list the swarm's secrets: {_said(r)}.")
    made = []
    for s in plan.missing(r.stdout.split()):
        c = _run(mc, shlex.join(plan.create_argv(s.name)), in_stream=Script(plan.value(s.name)))
        if not c.ok:
            raise SwarmError(f"{where(mc)}: cannot create the Swarm secret {s.name} (for {', '.join(s.services)}): "
                             f"{_said(c)}.")
        made.append(f"{s.name} ({s.key}, for {', '.join(s.services)})")
    return made


def create_proxy_config(mc: Any, rendered: Rendered) -> str | None:
    """Create the edge proxy's Swarm config when the swarm lacks it (its text on stdin)."""
    cfg = rendered.proxy
    if cfg is None:
        return None
    r = _run(mc, "docker config ls --format '{{.Name}}'")
    if not r.ok:
        raise SwarmError(f"{where(mc)}: cannot list the swarm's configs: {_said(r)}.")
    if cfg.name in r.stdout.split():
        return None
    c = _run(mc, shlex.join(cfg.create_argv()), in_stream=_script(cfg.text))
    if not c.ok:
        raise SwarmError(f"{where(mc)}: cannot create the Swarm config {cfg.name} (the config of the edge proxy "
                         f"{cfg.service}): {_said(c)}.")
    return cfg.name


def _prune(mc: Any, kind: str, stack: str, prune: Callable[[list[str]], list[str]]) -> tuple[list[str], list[str]]:
    """Remove the ``kind`` objects (``secret`` or ``config``) labelled for ``stack`` that
    ``prune`` picks from them: (removed, kept because the engine refused: a service still uses them)."""
    from .swarm_secrets import STACK_LABEL

    r = _run(mc, f"docker {kind} ls --filter {shlex.quote(f'label={STACK_LABEL}={stack}')} --format '{{{{.Name}}}}'")
    if not r.ok:
        return [], [f"(cannot list them: {_said(r)})"]
    removed: list[str] = []
    kept: list[str] = []
    for name in prune(r.stdout.split()):
        rm = _run(mc, f"docker {kind} rm {shlex.quote(name)}")
        if rm.ok:
            removed.append(name)
        else:
            kept.append(f"{name} ({_said(rm)})")
    return removed, kept


def prune_proxy_configs(mc: Any, rendered: Rendered) -> tuple[list[str], list[str]]:
    """Remove the stack's earlier proxy configs: (removed, kept because the engine refused)."""
    cfg = rendered.proxy
    return ([], []) if cfg is None else _prune(mc, "config", cfg.stack, cfg.prune)


def prune_secrets(mc: Any, rendered: Rendered) -> tuple[list[str], list[str]]:
    """Remove the stack's Swarm secrets (labelled for it) that the stack file no longer uses:
    (removed, kept because the engine refused: a service still uses them)."""
    return _prune(mc, "secret", rendered.secrets.stack, rendered.secrets.prune)


# ---------------------------------------------------------------- the deploy

def engine(settings: Settings, flag: str | None = None) -> str:
    """compose or swarm: the --engine flag, else the stack's ``engine`` setting, else compose."""
    from .config import ENGINES

    value = flag or str(settings.stack().options.get("engine") or "compose")
    if value not in ENGINES:
        raise ConfigError(f"--engine {value!r}: use compose (each host runs its own copy of the stack) or swarm "
                          f"(one stack across the inventory's swarm).")
    return value


def replicas_of(settings: Settings, given: Iterable[str]) -> dict[str, int]:
    from .swarm_render import parse_replicas

    return {**{str(k): int(v) for k, v in (settings.stack().options.get("replicas") or {}).items()},
            **parse_replicas(given)}


def render_stack(settings: Settings, replicas: Iterable[str] = (), allow_env_secrets: bool = False,
                 c: Any = None) -> tuple[Any, dict[str, Any], Rendered]:
    """(local Target, compose model, rendered stack): all on this machine, before any SSH work."""
    from invoke import Context

    from .swarm_render import render
    from .target import target

    t = target(c or Context(), settings)
    model = t.compose.model(t.c)
    mode = str(t.stack.options.get("endpoint_mode") or "dnsrr")
    rendered = render(model, replicas=replicas_of(settings, replicas), endpoint_mode=mode, stack=t.stack.project,
                      allow_env_secrets=allow_env_secrets)
    return t, model, rendered


def deploy(c: Any, settings: Settings, replicas: Iterable[str] = (), ship_all: bool = False,
           allow_env_secrets: bool = False, lock_wait: float = 0.0, message: str = "") -> dict[str, Any]:
    from .interrupt import phase
    from .lifecycle import one_shot_services
    from .remote.deploy import cancel_sleep
    from .remote.lock import Lock
    from .remote.release import audit
    from .swarm import host_of, list_nodes, manager

    report: dict[str, Any] = c.report if isinstance(getattr(c, "report", None), dict) else {}
    t, model, rendered = render_stack(settings, replicas, allow_env_secrets)
    stack = t.stack.project
    timeout = float(settings["timeout"])
    for note in rendered.notes:
        say(f"note: {note}")
    with manager(c, settings) as (mc, _):
        say(f"Deploying stack {t.stack.name} as swarm stack {stack} (stage {t.stack.stage}) through the manager "
            f"{where(mc)}")
        nodes = list_nodes(mc)
        check_placement(model, nodes, stack)
        if rendered.proxy is not None:  # a proxy in maintenance stays in it (maintenance off ends it)
            from .swarm_ops import current_maintenance
            from .swarm_proxy import switched

            m = current_maintenance(mc, stack, rendered.proxy.service)
            if m.on:
                rendered.proxy = switched(rendered.stack, rendered.proxy, model, m)
                say(f"note: the edge proxy {rendered.proxy.service} is in maintenance and stays in it "
                    f"(`memstack-ops maintenance off` ends it)")
        if str(t.stack.options.get("endpoint_mode") or "dnsrr") == "vip":  # doctor's check of the nodes, refused
            from .doctor import FAIL, endpoint_check, ipvs_of_nodes

            chk = endpoint_check(ipvs_of_nodes(settings, getattr(c, "config", None)), "vip")
            if chk.result == FAIL:
                raise Refused(f"Stack {stack} was not deployed (nothing changed): {chk.detail}. Fix: {chk.fix}.")
        plan = image_plan(settings, model, nodes, ship_all)
        host = host_of(mc)
        root = host.root_for(t.stack.name) if host is not None else f"/tmp/memstack-ops-{stack}"
        lock = Lock(mc, root, f"swarm deploy of {stack}" + (f": {message}" if message else ""))
        sleep = cancel_sleep(c) if getattr(c, "cancel", None) is not None else time.sleep
        lock.acquire(lock_wait, sleep=sleep, say=say)
        result, detail = "failed", ""
        try:
            for line in ship_images(settings, plan, ship_all, getattr(c, "config", None), getattr(c, "cancel", None)):
                say(f"Images: {line}")
            for made in create_secrets(mc, rendered):
                say(f"Swarm secret created: {made}")
            made_config = create_proxy_config(mc, rendered)
            if made_config:
                say(f"Swarm config created: {made_config} (the edge proxy's nginx config)")
            before = look(mc, stack)
            before_tasks = {x.id for x in before.tasks}
            names = sorted(rendered.stack["services"])
            jobs = one_shot_services(model)
            waves = start_waves(model, [n for n in names if n not in before.services])
            deadline = time.monotonic() + timeout
            if len(waves) > 1:
                say("Start order of the new services (their depends_on; the swarm runs none): "
                    + " -> ".join(", ".join(w) for w in waves))
            for i, wave in enumerate(waves[:-1]):  # deployed wave by wave, each waited for before the next
                present = [n for n in names if n in before.services] + [n for w in waves[:i + 1] for n in w]
                _stack_deploy(mc, stack, _subset(rendered.stack, present), t.compose.scrub)
                with phase(f"the start of {', '.join(wave)} on swarm stack {stack} (the later services are not "
                           f"created yet)"):
                    outcome, last = wait(mc, stack, wave, jobs, set(), before_tasks,
                                         max(1.0, deadline - time.monotonic()), sleep=sleep)
                if not outcome.ok:
                    last.nodes = {n.id: n.hostname for n in nodes}
                    later = [n for w in waves[i + 1:] for n in w]
                    detail = failure(mc, stack, outcome, last, set(), set(wave), t.compose.scrub, timeout,
                                     before_tasks, jobs, sleep=sleep)
                    head, nl, rest = detail.partition("\n")
                    detail = f"{head} Not created, as they wait for it: {', '.join(later)}.{nl}{rest}"
                    report.update(result="failed", detail=detail.splitlines()[0])
                    raise SwarmError(detail)
            _stack_deploy(mc, stack, rendered.stack, t.compose.scrub)
            after = look(mc, stack)
            existed = {n for n in names if n in before.services}
            updated = {n for n in existed if n in after.services
                       and after.services[n].template != before.services[n].template}
            created = sorted(set(names) - existed)
            say(f"docker stack deploy: {len(created)} service(s) created ({', '.join(created) or '-'}), "
                f"{len(updated)} updated ({', '.join(sorted(updated)) or '-'}), "
                f"{len(existed - updated)} unchanged. Waiting up to {timeout:g} s for them to converge ...")
            with phase(f"the convergence wait of swarm stack {stack} (the swarm keeps converging to what was "
                       f"deployed; nothing is rolled back)"):
                outcome, last = wait(mc, stack, names, jobs, updated, before_tasks,
                                     max(1.0, deadline - time.monotonic()), sleep=sleep)
            if not outcome.ok:
                last.nodes = {n.id: n.hostname for n in nodes}
                detail = failure(mc, stack, outcome, last, updated, set(created), t.compose.scrub, timeout,
                                 before_tasks, jobs, sleep=sleep)
                result = "rolled back" if updated else "failed"
                report.update(result=result, detail=detail.splitlines()[0])
                raise SwarmError(detail)
            removed, kept = prune_secrets(mc, rendered)
            if removed:
                say(f"Swarm secrets no longer used, removed: {', '.join(removed)}")
            if kept:
                warn(f"warning: Swarm secrets of the stack no longer in its file but kept: {', '.join(kept)}")
            removed, kept = prune_proxy_configs(mc, rendered)
            if removed:
                say(f"Earlier proxy configs removed: {', '.join(removed)}")
            if kept:
                warn(f"warning: earlier proxy configs of the stack kept: {', '.join(kept)}")
            result = "deployed"
            spread = placement_summary(last, nodes, names)
            detail = f"swarm stack {stack} converged: {spread}"
            report.update(result=result, detail=detail)
            say(f"Deployed: {detail}.")
            return report
        except MemstackError as e:
            if not detail:
                detail = str(e).splitlines()[0]
            raise
        except KeyboardInterrupt:
            result, detail = "interrupted", "interrupted: the swarm keeps converging to what was deployed"
            raise
        finally:
            if lock.alive():
                try:
                    audit(mc, root, "swarm deploy", stack, result, detail if result != "deployed" else "",
                          message=message)
                finally:
                    lock.release()


def start_waves(model: Mapping[str, Any], create: Iterable[str]) -> list[list[str]]:
    """The services this deploy creates, in the order their ``depends_on`` asks (the swarm itself
    runs no ``depends_on``): each wave's dependencies among them are in earlier waves; a service
    that exists already counts as started. Within a wave, in name order."""
    create = set(create)
    services = model.get("services") or {}
    needs = {n: {d for d in (services.get(n) or {}).get("depends_on") or {} if d in create and d != n}
             for n in create}
    waves: list[list[str]] = []
    done: set[str] = set()
    while len(done) < len(create):
        wave = sorted(n for n in create - done if needs[n] <= done)
        if not wave:  # a cycle (compose refuses one before this): the rest together
            wave = sorted(create - done)
        waves.append(wave)
        done |= set(wave)
    return waves


def _subset(stack_file: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The stack file with only the services ``names`` (its networks, secrets and configs kept:
    ``docker stack deploy`` removes no service that a file leaves out, without --prune)."""
    keep = set(names)
    return {**stack_file, "services": {n: s for n, s in (stack_file.get("services") or {}).items() if n in keep}}


def _stack_deploy(mc: Any, stack: str, stack_file: Mapping[str, Any], scrub: Callable[[str], str]) -> None:
    r = _run(mc, f"sh -c {shlex.quote(DEPLOY)} sh {shlex.quote(stack)}", in_stream=_script(json.dumps(stack_file,
                                                                                                   indent=1)))
    if not r.ok:
        raise SwarmError(f"{where(mc)}: docker stack deploy of {stack} failed: {scrub(_said(r))}")


def _script(text: str) -> Any:
    from .compose import Script

    return Script(text)


def placement_summary(last: Look, nodes: list[Node], names: Iterable[str]) -> str:
    """``api 3/3 on h1, h2, h3; db 1/1 on h2``: where each service's running tasks are."""
    host = {n.id: n.hostname for n in nodes}
    parts = []
    for name in names:
        svc = last.services.get(name)
        if svc is None:
            continue
        tasks = [x for x in last.of(name) if x.desired == "running" and x.state == "running"]
        if svc.replicas is None or tasks or svc.replicas:
            where_ = sorted({host.get(x.node_id, x.node_id[:12]) for x in tasks})
            parts.append(f"{name} {len(tasks)}/{svc.replicas if svc.replicas is not None else len(tasks)}"
                         + (f" on {', '.join(where_)}" if where_ else " (completed)"))
    return "; ".join(parts)


def failure(mc: Any, stack: str, outcome: Outcome, last: Look, updated: set[str], created: set[str],
            scrub: Callable[[str], str], timeout: float, before: set[str], jobs: set[str],
            sleep: Callable[[float], None] = time.sleep) -> str:
    """Say why, roll back what this run updated and wait for that; returns the error message
    (its first line names the service and its error)."""
    failed = sorted(n for n, v in outcome.verdicts.items() if v.state == "failed")
    late = sorted(n for n, v in outcome.verdicts.items() if v.state == "wait")
    blamed = failed or late
    first, details = [], []
    for name in blamed:
        v = outcome.verdicts[name]
        task = v.task or _failed_task([t for t in last.of(name) if t.id not in before])
        what = v.detail if v.state == "failed" else f"not converged within {timeout:g} s ({v.detail})"
        if task is not None:
            what += (f"; task {name}.{task.slot} ({task.id[:12]}) on node {node_name(last, task)}: {task.state}"
                     + (f", exit {task.exit_code}" if task.exit_code is not None else "")
                     + (f", {task.err}" if task.err and task.err not in what else ""))
        first.append(f"service {name}: {scrub(what)}")
        if task is not None:
            logs = task_logs(mc, task, scrub)
            details.append(f"{name}'s last log lines ({task.id[:12]}):\n"
                           + "\n".join(f"    {ln}" for ln in logs.splitlines()[-LOG_LINES:]))
    say(f"Swarm stack {stack} FAILED: " + "; ".join(first))
    for d in details:
        say(d)
    tail = ""
    if updated:
        by_swarm, by_us, impossible = rollback(mc, stack, sorted(updated), last)
        say(f"Rolling back the services this run updated: {', '.join(sorted(updated))} ...")
        back, _ = wait(mc, stack, by_swarm + by_us, jobs, set(), before, timeout, sleep=sleep, rolling_back=True)
        rolled = ", ".join([*(f"{n} (by the swarm itself)" for n in by_swarm), *by_us])
        tail = f" Rolled back: {rolled or 'none'}"
        if not back.ok:
            tail += (f" (not all back and running within {timeout:g} s: "
                     + "; ".join(f"{n}: {v.detail}" for n, v in back.verdicts.items() if v.state != "ok") + ")")
        if impossible:
            tail += f"; could not roll back: {', '.join(impossible)}"
        tail += "."
        say(tail.strip())
    if created:
        tail += (f" Created by this run (no earlier version to go back to), left as they are for inspection: "
                 f"{', '.join(sorted(created))}.")
    return "; ".join(first) + "." + tail + ("\n" + "\n".join(details) if details else "")


def node_name(last: Look, task: Task) -> str:
    return last.nodes.get(task.node_id, task.node_id[:12] or "(none)")
